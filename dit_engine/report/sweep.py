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
from dit_engine.report.cells import Cell, display_names, sweep_name

#: Groups that choose what is run and how it is reported, not how it is accelerated: a cell that
#: selects ``none`` in every other group is the sweep's no-acceleration (reference) cell.
NEUTRAL_GROUPS = frozenset({"model", "workload", "report"})
#: The acceleration groups: those whose options are plan transforms. Bundles of them (``method``,
#: ``experiment``) are judged by what they chose in these groups.
FALLBACK_GROUPS = frozenset({"cache", "calibrator", "parallel", "quant", "compile", "attention", "offload"})
#: A cell's reference run that took this many times longer (or shorter) than the median of the
#: other cells' reference runs of the same workload was timed under other conditions (a load spike).
TIMING_OUTLIER_FACTOR = 1.5
#: A cell that only skips work (caches, calibrators) cannot be faster than ``1 / compute_fraction``;
#: a speedup above that bound by more than this factor (timing noise) is marked untrusted.
SPEEDUP_BOUND_TOLERANCE = 1.15
#: Groups that make the computed work itself faster: with any of them on, the bound does not apply.
FASTER_WORK_GROUPS = frozenset({"parallel", "quant", "compile", "attention", "offload"})
#: Columns of ``summary.csv``, in order (``pareto`` is 1 for cells on the Pareto front).
CSV_COLUMNS = (
    "name", "label", "dir", "overrides", "status", "latency_s", "speedup", "compute_fraction",
    "psnr", "ssim", "mae", "peak_memory_mb", "pareto", "speedup_untrusted",
)
REPORT_FILES = {"csv": "summary.csv", "md": "summary.md", "png": "pareto.png", "html": "summary.html"}


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
    names = display_names(cells)
    for cell in cells:
        cell.label = names[cell.name]
    _mark_timing_outliers(cells)
    _fill_speedups(cells)
    _mark_speedups_above_the_bound(cells)
    for cell in pareto_front(cells):
        cell.pareto = True
    return cells


def _mark_timing_outliers(cells: list[Cell]) -> None:
    """Mark the cells whose own reference run (``report=quality``, timed in the cell) is an outlier
    against the other cells' reference runs of the same workload (same reference key): more than
    ``TIMING_OUTLIER_FACTOR`` times longer or shorter than their median. Such a cell's speedup
    says more about the machine's load at that moment than about its method."""
    by_key: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.ok and cell.speedup_source == "quality" and cell.reference_latency_s and cell.reference_key:
            by_key.setdefault(cell.reference_key, []).append(cell)
    for group in by_key.values():
        if len(group) < 3:  # too few to tell which side is off
            continue
        for cell in group:
            others = sorted(c.reference_latency_s for c in group if c is not cell)
            middle = len(others) // 2
            typical = others[middle] if len(others) % 2 else (others[middle - 1] + others[middle]) / 2
            ratio = cell.reference_latency_s / typical
            if ratio > TIMING_OUTLIER_FACTOR or ratio < 1 / TIMING_OUTLIER_FACTOR:
                cell.timing_outlier = (f"its reference run took {cell.reference_latency_s:.3g} s against a median of "
                                       f"{typical:.3g} s in the other {len(others)} cells ({ratio:.2g}x)")


def _mark_speedups_above_the_bound(cells: list[Cell]) -> None:
    """Mark the speedups that skipping work cannot give: a cell that only caches (no parallel,
    quant, compile, attention or offload) computing a fraction ``c`` of the block forwards is at
    most ``1 / c`` times faster; one measured well above that had a reference timed slower."""
    for cell in cells:
        if not (cell.ok and cell.speedup and cell.compute_fraction) or not _only_skips_work(cell):
            continue
        bound = 1 / cell.compute_fraction
        if cell.speedup > bound * SPEEDUP_BOUND_TOLERANCE:
            cell.untrusted_speedup = (f"{cell.speedup:.2f}x at {100 * cell.compute_fraction:.1f} % of the compute is above the "
                                      f"{bound:.2f}x that skipping work can give: its reference was timed under slower conditions")


def _only_skips_work(cell: Cell) -> bool:
    """Whether nothing but caches and calibrators accelerates the cell (no group that makes the
    computed work faster), by Hydra's recorded choices, else by its overrides."""
    if cell.choices:
        return all(cell.choices.get(group) in (None, "none") for group in FASTER_WORK_GROUPS)
    for override in cell.overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~").split(".")[0] in FASTER_WORK_GROUPS and value.strip() != "none":
            return False
    return True


def reference_cell(cells: list[Cell]) -> Cell | None:
    """The first successful cell that runs without acceleration, if any: ``none`` in every
    acceleration group (however chosen: ``cache=none``, ``+method=none``, an experiment's
    default), and every block forward computed when that was recorded."""
    groups = _acceleration_groups()
    return next((c for c in cells if c.ok and c.latency_s and _is_unaccelerated(c, groups)), None)


def pareto_front(cells: list[Cell]) -> list[Cell]:
    """Cells not dominated in (speedup, PSNR), both higher is better; identical counts as +inf dB.

    Only successful cells with both numbers take part, and not a cell whose speedup was timed
    during a load spike (``timing_outlier``) or is above what its compute allows
    (``untrusted_speedup``). Equal points do not dominate each other, so duplicates are all on the front.
    """
    points = [c for c in cells if c.ok and c.speedup is not None and c.psnr is not None and not c.timing_outlier
              and not c.untrusted_speedup]

    def dominates(a: Cell, b: Cell) -> bool:
        return a.speedup >= b.speedup and a.psnr >= b.psnr and (a.speedup > b.speedup or a.psnr > b.psnr)

    return [c for c in points if not any(dominates(other, c) for other in points if other is not c)]


def write_sweep_report(sweep_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md``, ``pareto.png`` and ``summary.html`` (the plot, each
    cell's contact sheet and compute strip) into ``sweep_dir``.

    Returns their absolute paths under the keys ``"csv"``, ``"md"``, ``"png"`` and ``"html"``. Each file is written to
    a temporary name and then moved into place, so a crash never leaves half a report.
    """
    return write_report_files(sweep_dir, collect_cells(sweep_dir))


def write_report_files(sweep_dir: str | os.PathLike, cells: list[Cell]) -> dict[str, Path]:
    """Write the report files for already collected ``cells`` (see :func:`write_sweep_report`)."""
    from dit_engine.report.html import summary_html, write_strips
    from dit_engine.report.plot import pareto_plot  # matplotlib is slow to import; only load it here

    sweep_dir = Path(sweep_dir).resolve()
    paths = {key: sweep_dir / name for key, name in REPORT_FILES.items()}
    atomic_write_text(paths["csv"], summary_csv(cells))
    atomic_write_text(paths["md"], summary_markdown(cells, sweep_name(sweep_dir, cells)))
    with atomic_path(paths["png"]) as temporary:
        pareto_plot(cells, temporary, title=f"Sweep {sweep_name(sweep_dir, cells)}: speedup vs quality")
    strips = write_strips(sweep_dir, cells)
    atomic_write_text(paths["html"], summary_html(sweep_dir, cells, sweep_name(sweep_dir, cells), REPORT_FILES["png"], strips))
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
            "name": cell.name, "label": cell.label, "dir": str(cell.dir), "overrides": " ".join(cell.overrides), "status": cell.status,
            "latency_s": cell.latency_s, "speedup": cell.speedup, "compute_fraction": cell.compute_fraction,
            "psnr": cell.psnr, "ssim": cell.ssim, "mae": cell.mae, "peak_memory_mb": cell.peak_memory_mb,
            "pareto": cell.pareto, "speedup_untrusted": cell.untrusted_speedup,
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
            f"`{_md_escape(_name(cell))}`",
            "ok" if cell.ok else "**FAILED**",
            _fmt(cell.latency_s, "{:.3g}"),
            _fmt(cell.speedup, "{:.2f}×") + (" (shared cores)" if cell.untrusted_timing and cell.speedup is not None else "")
            + (" (timing outlier)" if cell.timing_outlier and cell.speedup is not None else "")
            + (" ⚠ above 1/compute, untrusted" if cell.untrusted_speedup else ""),
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
    """``summary.md``: what the reference is, the Pareto front, the table, failures and the plot.

    Cells are named by job number and what differs between them (``#3 cache=fbcache``); their
    folders are in ``summary.csv`` (and under failed cells below)."""
    lines = [f"# Sweep {name}", "", reference_line(cells), ""]
    clocks = sorted({c.speedup_clock for c in cells if c.speedup_clock})
    if clocks:
        lines += [f"**Clock:** speedups timed on {' and '.join(f'`{c}`' for c in clocks)} (`report.clock`; `cpu_time` is "
                  "the process's own CPU time, which holds while other jobs share the machine); latencies are wall seconds.", ""]
    untrusted = [c for c in cells if c.untrusted_timing]
    if untrusted:
        lines += [f"**Timings not comparable:** {len(untrusted)} of {len(cells)} cells measured while other cells shared the "
                  f"machine ({untrusted[0].untrusted_timing}); their latencies and speedups say little. Rerun with "
                  "`hydra.launcher.n_jobs=1` to measure speed; PSNR and compute are unaffected.", ""]
    outliers = [c for c in cells if c.timing_outlier]
    if outliers:
        lines += ["**Timing outliers:** " + "; ".join(f"`{_md_escape(_name(c))}`: {c.timing_outlier}" for c in outliers)
                  + ". The machine was busy while these cells timed their reference, so their speedups are not comparable "
                  "and they are kept off the Pareto front; rerun them to measure their speed (PSNR and compute are unaffected).", ""]
    impossible = [c for c in cells if c.untrusted_speedup]
    if impossible:
        lines += ["**Untrusted speedups (⚠):** " + "; ".join(f"`{_md_escape(_name(c))}`: {c.untrusted_speedup}" for c in impossible)
                  + ". A cell that only skips work cannot beat 1 / its compute fraction, so these speedups are kept off the "
                  "Pareto front; rerun with `threads=1` on a quieter machine, or compare by compute (PSNR is unaffected).", ""]
    lines += [pareto_line(cells), "", markdown_table(cells)]
    failed = [c for c in cells if not c.ok]
    if failed:
        lines.append(f"Failed cells ({len(failed)} of {len(cells)}):\n")
        lines.extend(f"- `{_md_escape(_name(c))}` (`{_md_escape(c.name)}`): {c.error}" for c in failed)
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
        parts.append(f"the no-acceleration cell `{_md_escape(_name(reference))}` ({reference.latency_s:.3g} s): "
                     f"speedup = its latency / the cell's latency{scope}")
    if not parts:
        return ("**Reference:** none: no cell runs without acceleration and none used `report=quality`, so speedup is blank; "
                "add `cache=none` to the sweep or run it with `report=quality`.")
    text = "**Reference:** " + "; ".join(parts) + "."
    if reference is not None and reference.speedup_source == "quality" and not 0.8 <= reference.speedup <= 1.25:
        # The no-acceleration cell should run as fast as the reference; if not, the reference's
        # latency (possibly cached from another process or machine load) is not comparable.
        text += (f" **Check the timings:** the no-acceleration cell `{_md_escape(_name(reference))}` has speedup "
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
    names = ", ".join(f"`{_md_escape(_name(c))}`" for c in sorted(front, key=lambda c: c.speedup))
    return f"**Pareto front** (speedup ↑, PSNR ↑; {len(front)} of {len(cells)} cells, ★ below): {names}."


def _name(cell: Cell) -> str:
    return cell.label or cell.name


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
        reference_latency_s=_number(_get(metrics, "quality", "reference", "clock_s")
                                    or _get(metrics, "quality", "reference", "latency_s")),
        speedup_clock=_get(metrics, "quality", "speedup_clock"),
        reference_key=_get(metrics, "quality", "reference", "key"),
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


#: Groups that bundle acceleration groups' options (``+method=dbcache`` chooses cache and
#: calibrator): judged by the groups they set when Hydra's choices are recorded, else by value.
BUNDLE_GROUPS = frozenset({"method"})


def _is_unaccelerated(cell: Cell, groups: frozenset[str]) -> bool:
    if cell.compute_fraction is not None and cell.compute_fraction < 1.0:
        return False  # some block forward was skipped: accelerated, whatever chose it
    if cell.choices:
        # Hydra's record of the chosen option per group also covers defaults the sweep did not
        # override, and what a bundle (+method=..., +experiment=...) chose in each group.
        return all(cell.choices.get(group) in (None, "none") for group in groups)
    for override in cell.overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if sep and "." not in key and key in groups | BUNDLE_GROUPS and value.strip() != "none":
            return False
    return True


def _acceleration_groups() -> frozenset[str]:
    """The groups whose options are plan transforms (see ``FALLBACK_GROUPS``)."""
    return FALLBACK_GROUPS


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
