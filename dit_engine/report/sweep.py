"""Summaries of a Hydra sweep: one row per cell, its speedup and quality, and the Pareto front.

A sweep directory (``python -m dit_engine -m ...``) holds one subdirectory per cell with the
cell's ``metrics.json`` and ``.hydra/``. :func:`collect_cells` reads them into :class:`Cell` rows
and :func:`write_sweep_report` writes ``summary.csv``, ``summary.md`` and ``pareto.png`` next to
them. A cell without a readable ``metrics.json`` is reported as failed, never skipped silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from dit_engine.atomic import atomic_path, atomic_write_text
from dit_engine.errors import DitEngineError
from dit_engine.report.cells import Cell, sweep_name

#: Groups that choose what is run and how it is reported, not how it is accelerated: a cell that
#: selects ``none`` in every other group is the sweep's no-acceleration (reference) cell.
NEUTRAL_GROUPS = frozenset({"model", "workload", "report"})
#: Acceleration groups assumed when the installed config tree cannot be listed.
FALLBACK_GROUPS = frozenset({"cache", "calibrator", "parallel", "quant", "compile", "attention", "offload"})
#: Columns of ``summary.csv``, in order (``pareto`` is 1 for cells on the Pareto front).
CSV_COLUMNS = (
    "name", "dir", "overrides", "status", "latency_s", "speedup", "compute_fraction",
    "psnr", "ssim", "mae", "peak_memory_mb", "pareto",
)
REPORT_FILES = {"csv": "summary.csv", "md": "summary.md", "png": "pareto.png"}


class SweepReportError(DitEngineError):
    """The sweep directory is missing or holds no cells."""


def collect_cells(sweep_dir: str | os.PathLike) -> list[Cell]:
    """Every cell of ``sweep_dir`` in job order, with speedups filled in and the front marked.

    Raises :class:`SweepReportError` if the directory does not exist or holds no cell.
    """
    if not Path(sweep_dir).is_dir():
        raise SweepReportError(
            f"no sweep directory {sweep_dir}; pass the folder a `python -m dit_engine -m ...` run wrote under outputs/sweeps/"
        )
    sweep_dir = Path(sweep_dir).resolve()  # absolute cell dirs stay valid in summary.csv from anywhere
    cells = [_read_cell(sweep_dir, cell_dir) for cell_dir in _cell_dirs(sweep_dir)]
    if not cells:
        raise SweepReportError(
            f"{sweep_dir} holds no sweep cells (no subdirectory with metrics.json or .hydra/overrides.yaml); "
            "pass the sweep directory itself, e.g. outputs/sweeps/<date>/<time>"
        )
    cells.sort(key=lambda c: (c.job_num is None, c.job_num if c.job_num is not None else 0, c.name))
    _fill_speedups(cells)
    for cell in pareto_front(cells):
        cell.pareto = True
    return cells


def reference_cell(cells: list[Cell]) -> Cell | None:
    """The first successful cell that selects ``none`` in every acceleration group, if any."""
    groups = _acceleration_groups()
    return next((c for c in cells if c.ok and c.latency_s and _is_unaccelerated(c, groups)), None)


def pareto_front(cells: list[Cell]) -> list[Cell]:
    """Cells not dominated in (speedup, PSNR), both higher is better; identical counts as +inf dB.

    Only successful cells with both numbers take part. Equal points do not dominate each other, so
    duplicates are all on the front.
    """
    points = [c for c in cells if c.ok and c.speedup is not None and c.psnr is not None]

    def dominates(a: Cell, b: Cell) -> bool:
        return a.speedup >= b.speedup and a.psnr >= b.psnr and (a.speedup > b.speedup or a.psnr > b.psnr)

    return [c for c in points if not any(dominates(other, c) for other in points if other is not c)]


def write_sweep_report(sweep_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md`` and ``pareto.png`` into ``sweep_dir``.

    Returns their absolute paths under the keys ``"csv"``, ``"md"`` and ``"png"``. Each file is written to
    a temporary name and then moved into place, so a crash never leaves half a report.
    """
    return write_report_files(sweep_dir, collect_cells(sweep_dir))


def write_report_files(sweep_dir: str | os.PathLike, cells: list[Cell]) -> dict[str, Path]:
    """Write the three report files for already collected ``cells`` (see :func:`write_sweep_report`)."""
    from dit_engine.report.plot import pareto_plot  # matplotlib is slow to import; only load it here

    sweep_dir = Path(sweep_dir).resolve()
    paths = {key: sweep_dir / name for key, name in REPORT_FILES.items()}
    atomic_write_text(paths["csv"], summary_csv(cells))
    atomic_write_text(paths["md"], summary_markdown(cells, sweep_name(sweep_dir)))
    with atomic_path(paths["png"]) as temporary:
        pareto_plot(cells, temporary, title=f"Sweep {sweep_name(sweep_dir)}: speedup vs quality")
    return paths


# ----------------------------------------------------------------------------- rendering


def summary_csv(cells: list[Cell]) -> str:
    """``summary.csv`` text: full-precision numbers, ``inf`` for identical PSNR, blank when unknown."""

    def value(v: Any) -> Any:
        if v is None:
            return ""
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, float):
            return repr(v)  # repr round-trips, so the CSV equals metrics.json exactly
        return v

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for cell in cells:
        row = {
            "name": cell.name, "dir": str(cell.dir), "overrides": " ".join(cell.overrides), "status": cell.status,
            "latency_s": cell.latency_s, "speedup": cell.speedup, "compute_fraction": cell.compute_fraction,
            "psnr": cell.psnr, "ssim": cell.ssim, "mae": cell.mae, "peak_memory_mb": cell.peak_memory_mb,
            "pareto": cell.pareto,
        }
        writer.writerow([value(row[column]) for column in CSV_COLUMNS])
    return buffer.getvalue()


def markdown_table(cells: list[Cell]) -> str:
    """The cells as a Markdown table with rounded numbers (the table ``python -m dit_engine.report`` prints)."""
    header = ["cell", "status", "latency (s)", "speedup", "compute", "PSNR (dB)", "SSIM", "MAE", "peak mem (MB)", "Pareto"]
    align = ["---", ":---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", ":---:"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for cell in cells:
        row = [
            f"`{_md_escape(cell.name)}`",
            "ok" if cell.ok else "**FAILED**",
            _fmt(cell.latency_s, "{:.3g}"),
            _fmt(cell.speedup, "{:.2f}×") + (" (shared cores)" if cell.untrusted_timing and cell.speedup is not None else ""),
            _fmt(None if cell.compute_fraction is None else 100 * cell.compute_fraction, "{:.1f} %"),
            "∞" if cell.psnr == math.inf else _fmt(cell.psnr, "{:.2f}"),
            _fmt(cell.ssim, "{:.4f}"),
            _fmt(cell.mae, "{:.3g}"),
            _fmt(cell.peak_memory_mb, "{:,.0f}"),
            "★" if cell.pareto else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(cells: list[Cell], name: str) -> str:
    """``summary.md``: what the reference is, the Pareto front, the table, failures and the plot."""
    lines = [f"# Sweep {name}", "", reference_line(cells), ""]
    untrusted = [c for c in cells if c.untrusted_timing]
    if untrusted:
        lines += [f"**Timings not comparable:** {len(untrusted)} of {len(cells)} cells measured while other cells shared the "
                  f"machine ({untrusted[0].untrusted_timing}); their latencies and speedups say little. Rerun with "
                  "`hydra.launcher.n_jobs=1` to measure speed; PSNR and compute are unaffected.", ""]
    lines += [pareto_line(cells), "", markdown_table(cells)]
    failed = [c for c in cells if not c.ok]
    if failed:
        lines.append(f"Failed cells ({len(failed)} of {len(cells)}):\n")
        lines.extend(f"- `{_md_escape(c.name)}`: {c.error}" for c in failed)
        lines.append("")
    lines += [
        "PSNR, SSIM and MAE compare each cell's images with the reference images (∞ dB = identical); "
        "compute is the fraction of transformer block forwards run versus an uncached run.",
        "",
        "![speedup vs PSNR](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def reference_line(cells: list[Cell]) -> str:
    """One Markdown line saying what speedups and PSNR are measured against."""
    parts = []
    quality = [c for c in cells if c.speedup_source == "quality"]
    if quality:
        latencies = [c.reference_latency_s for c in quality if c.reference_latency_s is not None]
        span = ""
        if latencies:
            low, high = min(latencies), max(latencies)
            span = f", {low:.3g} s" if math.isclose(low, high, rel_tol=0.01) else f", {low:.3g}–{high:.3g} s"
        ran = sum(1 for c in cells if c.ok)
        scope = "every cell that ran" if len(quality) == ran else f"{len(quality)} of the {ran} cells that ran"
        parts.append(f"each cell's own uncached run of the same workload (`report=quality`{span}), for {scope}")
    reference = reference_cell(cells)
    if any(c.speedup_source == "reference cell" for c in cells) and reference is not None:
        scope = " for the speedups of the other cells" if quality else ""
        parts.append(f"the no-acceleration cell `{_md_escape(reference.name)}` ({reference.latency_s:.3g} s): "
                     f"speedup = its latency / the cell's latency{scope}")
    if not parts:
        return ("**Reference:** none: no cell runs without acceleration and none used `report=quality`, so speedup is blank; "
                "add `cache=none` to the sweep or run it with `report=quality`.")
    text = "**Reference:** " + "; ".join(parts) + "."
    if reference is not None and reference.speedup_source == "quality" and not 0.8 <= reference.speedup <= 1.25:
        # The no-acceleration cell should run as fast as the reference; if not, the reference's
        # latency (possibly cached from another process or machine load) is not comparable.
        text += (f" **Check the timings:** the no-acceleration cell `{_md_escape(reference.name)}` has speedup "
                 f"{reference.speedup:.2f}× against that reference instead of about 1×, so the reference latency was "
                 "measured under other conditions; compare speedups within this sweep (latency column) instead.")
    if not any(c.psnr is not None for c in cells):
        text += " PSNR/SSIM/MAE are blank: they need `report=quality`."
    return text


def pareto_line(cells: list[Cell]) -> str:
    """One Markdown line naming the cells on the Pareto front (speedup up, PSNR up)."""
    front = [c for c in cells if c.pareto]
    if not front:
        return "**Pareto front** (speedup ↑, PSNR ↑): empty: no successful cell has both a speedup and a PSNR."
    names = ", ".join(f"`{_md_escape(c.name)}`" for c in sorted(front, key=lambda c: c.speedup))
    return f"**Pareto front** (speedup ↑, PSNR ↑; {len(front)} of {len(cells)} cells, ★ below): {names}."


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else spec.format(value)


def _md_escape(text: str) -> str:
    # A pipe would end the table cell even inside backticks.
    return text.replace("|", "\\|")


# ----------------------------------------------------------------------------- reading


def _cell_dirs(sweep_dir: Path) -> list[Path]:
    # Recursive, because Hydra does not escape "/" in override_dirname: an override such as
    # model.pretrained=/models/flux puts the cell three folders down.
    found = {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    found |= {p.parent for p in sweep_dir.rglob("metrics.json")} | {p.parent for p in sweep_dir.rglob("failed.json")}
    # Hidden folders hold Hydra's files or a run's staging area, never a cell of their own.
    return sorted(d for d in found if d != sweep_dir and not any(part.startswith(".") for part in d.relative_to(sweep_dir).parts))


def _read_cell(sweep_dir: Path, cell_dir: Path) -> Cell:
    name = cell_dir.relative_to(sweep_dir).as_posix()
    overrides = _read_overrides(cell_dir)
    choices = _read_choices(cell_dir)
    metrics_path = cell_dir / "metrics.json"
    if not metrics_path.is_file():
        return Cell(name, cell_dir, overrides, "failed", choices=choices, error=_failure_reason(cell_dir))
    try:
        metrics = json.loads(metrics_path.read_text())
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return Cell(name, cell_dir, overrides, "failed", choices=choices, error=f"unreadable metrics.json ({err})")

    overrides = list(_get(metrics, "run", "overrides") or overrides)
    quality = metrics.get("quality") if isinstance(metrics.get("quality"), dict) else None
    psnr = None
    if quality is not None and isinstance(quality.get("aggregate"), dict):
        # metrics.json writes non-finite numbers as null; for PSNR that means identical images.
        psnr = _number(quality["aggregate"].get("psnr"))
        psnr = math.inf if psnr is None else psnr
    memory = _number(_get(metrics, "memory", "cuda_peak_allocated_mb"))
    speedup = _number(_get(metrics, "quality", "speedup_vs_reference"))
    return Cell(
        name=name,
        dir=cell_dir,
        overrides=overrides,
        status="ok",
        latency_s=_number(_get(metrics, "latency", "total_s")),
        speedup=speedup,
        speedup_source="quality" if speedup is not None else None,
        compute_fraction=_number(_get(metrics, "compute", "compute_fraction")),
        psnr=psnr,
        ssim=_number(_get(metrics, "quality", "aggregate", "ssim")),
        mae=_number(_get(metrics, "quality", "aggregate", "mae")),
        # On GPU the allocator peak is what the run itself needed; the RSS peak is mostly the runtime.
        peak_memory_mb=memory if memory is not None else _number(_get(metrics, "memory", "peak_rss_mb")),
        reference_latency_s=_number(_get(metrics, "quality", "reference", "latency_s")),
        choices=choices,
        untrusted_timing=_get(metrics, "latency", "untrusted"),
    )


def _failure_reason(cell_dir: Path) -> str:
    """The reason a cell recorded in ``failed.json``, or why it is counted as failed without one."""
    try:
        reason = json.loads((cell_dir / "failed.json").read_text())["reason"]
        return f"{reason} (see the cell's dit_engine.log)"
    except (OSError, ValueError, KeyError, TypeError):
        return "no metrics.json: the run did not finish (interrupted, or it crashed); see the cell's dit_engine.log"


def _read_overrides(cell_dir: Path) -> list[str]:
    try:
        data = yaml.safe_load((cell_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in data] if isinstance(data, list) else []


def _read_choices(cell_dir: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((cell_dir / ".hydra" / "hydra.yaml").read_text())
        choices = data["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return dict(choices) if isinstance(choices, dict) else {}


def _fill_speedups(cells: list[Cell]) -> None:
    reference = reference_cell(cells)
    if reference is None:
        return
    for cell in cells:
        if cell.ok and cell.speedup is None and cell.latency_s:
            cell.speedup = reference.latency_s / cell.latency_s
            cell.speedup_source = "reference cell"


def _is_unaccelerated(cell: Cell, groups: frozenset[str]) -> bool:
    if cell.choices:
        # Hydra's record of the chosen option per group also covers defaults the sweep did not override.
        own = {k: v for k, v in cell.choices.items() if "/" not in str(k) and not str(k).startswith("hydra")}
        return all(v in (None, "none") for k, v in own.items() if k not in NEUTRAL_GROUPS)
    for override in cell.overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if sep and "." not in key and key in groups and key not in NEUTRAL_GROUPS and value.strip() != "none":
            return False
    return True


def _acceleration_groups() -> frozenset[str]:
    try:
        from importlib.resources import files

        root = files("dit_engine.conf")
        groups = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    except (ImportError, OSError, TypeError):
        return FALLBACK_GROUPS
    return frozenset(groups - NEUTRAL_GROUPS) or FALLBACK_GROUPS


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
