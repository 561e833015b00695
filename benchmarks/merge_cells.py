"""Add a sweep's cells to the recorded comparison of docs/caches.md (``docs/caches_vs_peers*.csv``),
recompute the Pareto column over every recorded cell and redraw the plot.

The CSVs hold the cells of every sweep that went into the table; a new method is measured by its
own sweep (same workload, clock and timing settings as the table's) and merged here instead of
re-running the whole comparison. A cell is named by its overrides that differ from the sweep's
common settings (``+method=step_spectrum_ultra cache.budget=0.18 cache.schedule=...``); a name already in the CSV is
replaced.

    python benchmarks/merge_cells.py docs/caches_vs_peers.csv docs/images/caches_vs_peers.png \\
        outputs/sweeps/<sweep> [more sweeps] [--title "..."]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from dit_engine.report.cells import Cell
from dit_engine.report.plot import pareto_plot
from dit_engine.report.sweep import collect_cells, pareto_front

COLUMNS = ["name", "status", "latency_s", "speedup", "speedup_clock", "compute_fraction", "psnr", "ssim", "mae",
           "peak_memory_mb", "pareto"]
#: settings every cell of the comparison shares: not part of a cell's name
COMMON = ("report", "quiet", "workload.", "hydra.", "+experiment", "cache=scm_static", "calibrator=spectrum")


def cell_name(cell: Cell) -> str:
    kept = [o for o in cell.overrides if not o.startswith(COMMON)]
    kept.sort(key=lambda o: not o.startswith("+method"))
    return " ".join(kept)


def number(text: str) -> float | None:
    return None if text in ("", "None") else float(text)


def read_rows(path: Path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


def as_cell(index: int, row: dict) -> Cell:
    """The row as a plot's cell, numbered by its row (a crowded label becomes ``#n``: row n of the CSV, from 0)."""
    # a schedule file's path is long and says nothing on a plot: label it "planned"
    overrides = ["planned" if o.startswith("cache.schedule=") else o for o in row["name"].split()]
    return Cell(name=f"{index}_{row['name']}", dir=Path("."), overrides=overrides, status=row["status"],
                latency_s=number(row["latency_s"]), speedup=number(row["speedup"]), compute_fraction=number(row["compute_fraction"]),
                psnr=number(row["psnr"]), ssim=number(row["ssim"]), mae=number(row["mae"]),
                peak_memory_mb=number(row["peak_memory_mb"]), speedup_clock=row.get("speedup_clock") or None)


def as_row(cell: Cell, name: str) -> dict:
    return {"name": name, "status": cell.status, "latency_s": cell.latency_s, "speedup": cell.speedup,
            "speedup_clock": cell.speedup_clock, "compute_fraction": cell.compute_fraction,
            "psnr": "inf" if cell.psnr is not None and math.isinf(cell.psnr) else cell.psnr,
            "ssim": cell.ssim, "mae": cell.mae, "peak_memory_mb": cell.peak_memory_mb, "pareto": 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("plot", type=Path)
    parser.add_argument("sweeps", type=Path, nargs="*", help="sweep directories to add (none: recompute and redraw)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    rows = {row["name"]: row for row in read_rows(args.csv)}
    for sweep in args.sweeps:
        for cell in collect_cells(sweep):
            rows[cell_name(cell)] = as_row(cell, cell_name(cell))
    cells = [as_cell(index, row) for index, row in enumerate(rows.values())]
    front = {id(c) for c in pareto_front(cells)}
    for row, cell in zip(rows.values(), cells):
        row["pareto"] = int(id(cell) in front)
        cell.pareto = id(cell) in front
    with args.csv.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows.values())
    pareto_plot(cells, args.plot, title=args.title)
    print(f"{args.csv}: {len(rows)} cells, {len(front)} on the front; {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
