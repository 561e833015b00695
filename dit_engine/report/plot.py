"""The sweep's speedup-vs-quality plot (``pareto.png``).

Drawn on matplotlib's Agg canvas directly (no pyplot), so it works headless and never changes
the backend of a caller's interactive session.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from dit_engine.report.cells import Cell, short_labels, sweep_name

FRONT_COLOR = "#d95f02"
OTHER_COLOR = "#6b7b8c"
GUIDE_COLOR = "#9a9a9a"
LABEL_SIZE = 7.5
#: Points closer than this (pixels; about a marker's width) share one label.
_CLUSTER_PX = 10.0
#: Above this many bars the bar chart labels cells by number only.
_MAX_BAR_LABELS = 20
#: Label positions tried around a point, nearest first: (dx, dy) in points, horizontal and vertical alignment.
_NEAR = [(7, 4, "left", "bottom"), (7, -4, "left", "top"), (-7, 4, "right", "bottom"), (-7, -4, "right", "top"),
         (0, 8, "center", "bottom"), (0, -8, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center"),
         (-3, 9, "left", "bottom"), (-3, -9, "left", "top"), (3, 9, "right", "bottom"), (3, -9, "right", "top")]
#: Farther positions, used with a leader line when every near one overlaps something.
_FAR = [(dx * f, dy * f, ha, va) for f in (2.5, 4.0) for dx, dy, ha, va in _NEAR]


def pareto_plot(cells: Sequence[Cell], path: str | os.PathLike, title: str | None = None) -> Path:
    """Save a speedup (x) vs PSNR (y) scatter of ``cells`` to ``path`` (PNG, 8x5 in at 150 dpi).

    Cells identical to the reference (PSNR ``inf``) sit on a dashed line at the top marked ``∞``;
    the Pareto front (``cell.pareto``) is highlighted and joined by a step line; every point is
    labelled with the overrides that differ between cells, or with its cell number (``#3``) where
    that label would overlap another. Without any PSNR (no ``report=quality``) the figure is a bar
    chart of speedups instead. Returns ``path``.
    """
    path = Path(path)
    labels = short_labels(cells)
    if title is None:
        title = _default_title(cells)
    figure = Figure(figsize=(8, 5), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    plotted = [c for c in cells if c.ok and c.speedup is not None and c.psnr is not None]
    notes = _notes(cells, plotted)
    left = 0.09
    if not plotted:
        # The bar chart's cell labels are y tick labels: widen the margin to fit the longest one.
        bars = [c for c in cells if c.ok and c.speedup is not None]
        longest = max((len(labels[c.name]) for c in bars), default=0) if len(bars) <= _MAX_BAR_LABELS else 4
        left = min(0.5, max(left, 0.03 + 0.0078 * longest))
    _layout(figure, notes, left)
    if plotted:
        ys = _scatter(axes, plotted)
        placed, tagged = _place_labels(figure, axes, plotted, ys, labels)
        if tagged:
            # A note explaining the "#n" tags needs its own line: make room, then place the labels again.
            notes.append("#n: cell n of summary.md (full label did not fit)")
            _layout(figure, notes, left)
            for annotation in placed:
                annotation.remove()
            _place_labels(figure, axes, plotted, ys, labels)
    else:
        _speedup_bars(axes, cells, labels)
    figure.suptitle(title, fontsize=11, y=0.975)
    for index, note in enumerate(notes):
        figure.text(0.01, 0.012 + 0.035 * (len(notes) - 1 - index), note, fontsize=7, color="#555555", ha="left", va="bottom")
    figure.savefig(path, format="png", dpi=150)
    return path


def _layout(figure: Figure, notes: Sequence[str], left: float) -> None:
    # Room at the bottom for the note lines; room at the top for the title and the legend row.
    figure.subplots_adjust(left=left, right=0.96, top=0.84, bottom=0.13 + 0.035 * len(notes))


def _default_title(cells: Sequence[Cell]) -> str:
    parents = {Path(c.dir).parent for c in cells if c.name.count("/") == 0}
    name = sweep_name(parents.pop(), cells) if len(parents) == 1 else sweep_name("sweep", cells)
    return f"Sweep {name}: speedup vs quality"


def _notes(cells: Sequence[Cell], plotted: Sequence[Cell]) -> list[str]:
    notes = []
    failed = [c.label or c.name for c in cells if not c.ok]
    if failed:
        notes.append(_shorten(f"failed ({len(failed)}): " + ", ".join(failed)))
    missing = [c.label or c.name for c in cells if c.ok and c not in plotted]
    if plotted and missing:
        notes.append(_shorten(f"not plotted, no speedup or PSNR ({len(missing)}): " + ", ".join(missing)))
    impossible = [c.label or c.name for c in plotted if c.untrusted_speedup]
    if impossible:
        notes.append(_shorten(f"speedup above 1/compute (what skipping work allows), untrusted, kept off the front "
                              f"({len(impossible)}): " + ", ".join(impossible)))
    outliers = [c.label or c.name for c in plotted if c.timing_outlier]
    if outliers:
        notes.append(_shorten(f"speedup not comparable, reference run timed during a load spike, kept off the front "
                              f"({len(outliers)}): " + ", ".join(outliers)))
    return notes


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scatter(axes, cells: Sequence[Cell]) -> list[float]:
    """Draw points, front, guides, ticks and legend; return each cell's y (``∞`` mapped to the top line)."""
    finite = [c.psnr for c in cells if math.isfinite(c.psnr)]
    has_inf = len(finite) < len(cells)
    if finite:
        low, high = min(finite), max(finite)
        span = max(high - low, 2.0)
    else:
        low = high = 0.0
        span = 2.0
    # Identical cells are drawn on a line above the best finite PSNR, far enough to read as separate.
    y_inf = high + 0.3 * span if finite else 0.0
    top = (y_inf if has_inf else high) + 0.12 * span
    bottom = low - 0.15 * span if finite else y_inf - 1.0
    axes.set_ylim(bottom, top)

    def y_of(cell: Cell) -> float:
        return y_inf if cell.psnr == math.inf else cell.psnr

    speedups = [c.speedup for c in cells]
    x_low, x_high = min(speedups), max(speedups)
    if x_low <= 2.0 and x_high >= 0.5:
        # Show where "as fast as the reference" is, unless that would squash every point to one side.
        x_low, x_high = min(x_low, 1.0), max(x_high, 1.0)
    x_span = max(x_high - x_low, 0.2)
    axes.set_xlim(x_low - 0.1 * x_span, x_high + 0.1 * x_span)

    axes.grid(True, color="#e4e4e4", linewidth=0.6, zorder=0)
    axes.axvline(1.0, color=GUIDE_COLOR, linestyle=":", linewidth=1.0, zorder=1)
    if has_inf:
        axes.axhline(y_inf, color=GUIDE_COLOR, linestyle="--", linewidth=0.9, zorder=1)

    front = sorted((c for c in cells if c.pareto), key=lambda c: (c.speedup, -y_of(c)))
    others = [c for c in cells if not c.pareto]
    if others:
        axes.scatter([c.speedup for c in others], [y_of(c) for c in others], s=34, color=OTHER_COLOR, zorder=3)
    if front:
        # "pre" steps trace the edge of the region the front dominates: down at each point, then right.
        axes.step([c.speedup for c in front], [y_of(c) for c in front], where="pre", color=FRONT_COLOR, linewidth=1.6, zorder=2)
        axes.scatter([c.speedup for c in front], [y_of(c) for c in front], s=70, color=FRONT_COLOR,
                     edgecolor="black", linewidth=0.7, zorder=4)

    _y_ticks(axes, bottom, high + 0.05 * span if finite else None, y_inf if has_inf else None)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}×"))
    axes.set_xlabel("speedup vs reference (higher is better)")
    axes.set_ylabel("PSNR vs reference, dB (higher is better)")

    handles = [Line2D([], [], marker="o", color=FRONT_COLOR, markeredgecolor="black", markersize=7, linewidth=1.6, label="Pareto front"),
               Line2D([], [], marker="o", color=OTHER_COLOR, linestyle="none", markersize=6, label="dominated"),
               Line2D([], [], color=GUIDE_COLOR, linestyle=":", label="reference speed (1×)")]
    if has_inf:
        handles.append(Line2D([], [], color=GUIDE_COLOR, linestyle="--", label="∞: identical to reference"))
    axes.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=len(handles), frameon=False,
                fontsize=8, handlelength=2.0, borderaxespad=0.0, columnspacing=1.4)
    return [y_of(c) for c in cells]


def _y_ticks(axes, bottom: float, finite_top: float | None, y_inf: float | None) -> None:
    # Ticks cover the finite PSNRs only, so no number is printed between them and the "∞" line.
    ticks = []
    if finite_top is not None:
        ticks = [t for t in MaxNLocator(nbins=6).tick_values(bottom, finite_top) if bottom <= t <= finite_top]
    tick_labels = [f"{t:g}" for t in ticks]
    if y_inf is not None:
        ticks.append(y_inf)
        tick_labels.append("∞")
    axes.set_yticks(ticks, labels=tick_labels)
    if y_inf is not None:
        axes.get_yticklabels()[-1].set_fontsize(13)


def _place_labels(figure: Figure, axes, cells: Sequence[Cell], ys: Sequence[float],
                  labels: dict[str, str]) -> tuple[list, bool]:
    """Label every point at the nearby spot that overlaps least (greedy); return the labels and
    whether any point had to be tagged ``#n`` (its cell number) because its full label overlapped.
    """
    renderer = figure.canvas.get_renderer()
    to_display = axes.transData.transform
    points = [tuple(to_display((c.speedup, y))) for c, y in zip(cells, ys)]
    groups = _clusters(points, distance=_CLUSTER_PX)
    # Keep labels off the markers too (front markers are drawn larger).
    occupied = [(px - r, py - r, px + r, py + r) for (px, py), r in ((p, 9.0 if c.pareto else 6.5) for p, c in zip(points, cells))]
    frame = axes.get_window_extent(renderer)
    frame = (frame.x0, frame.y0, frame.x1, frame.y1)
    # Front points first, so the labels that matter most get the best spots; then left to right.
    groups.sort(key=lambda g: (not any(cells[i].pareto for i in g), min(points[i][0] for i in g)))
    placed, tagged = [], False
    for group in groups:
        # Anchor at the group's best cell: the front point when the group has one.
        anchor = max(group, key=lambda i: (cells[i].pareto, cells[i].speedup))
        xy = (cells[anchor].speedup, ys[anchor])
        full = merge_labels([labels[cells[i].name] for i in group])
        cost, annotation, extent = _best_spot(axes, renderer, xy, full, occupied, frame)
        if cost > 0:
            tag = ",".join(f"#{cells[i].job_num}" if cells[i].job_num is not None else cells[i].name for i in group)
            tag_cost, tag_annotation, tag_extent = _best_spot(axes, renderer, xy, tag, occupied, frame)
            if tag_cost < cost:
                annotation.remove()
                annotation, extent, tagged = tag_annotation, tag_extent, True
            else:
                tag_annotation.remove()
        occupied.append(extent)
        placed.append(annotation)
    return placed, tagged


def _best_spot(axes, renderer, xy: tuple[float, float], text: str, occupied: list, frame: tuple):
    """``(overlap cost, annotation, extent)`` of ``text`` at the first free candidate spot, else the least bad."""
    best = None
    for rank, (dx, dy, ha, va) in enumerate(_NEAR + _FAR):
        far = rank >= len(_NEAR)
        annotation = axes.annotate(
            text, xy, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
            fontsize=LABEL_SIZE, zorder=2.5, annotation_clip=False,
            bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8),
            arrowprops=dict(arrowstyle="-", color=GUIDE_COLOR, linewidth=0.6, shrinkA=0, shrinkB=4) if far else None,
        )
        box = annotation.get_window_extent(renderer)
        extent = (box.x0, box.y0, box.x1, box.y1)
        cost = sum(_overlap(extent, other) for other in occupied) + 4 * _outside(extent, frame)
        if cost == 0:
            if best is not None:
                best[1].remove()
            return 0.0, annotation, extent
        # Farther spots must be clearly better to win: a label next to its point reads best.
        weighted = cost * (1 + 0.1 * rank)
        if best is None or weighted < best[3]:
            if best is not None:
                best[1].remove()
            best = (cost, annotation, extent, weighted)
        else:
            annotation.remove()
    return best[0], best[1], best[2]


def _clusters(points: Sequence[tuple[float, float]], distance: float) -> list[list[int]]:
    """Indices of points chained together by gaps below ``distance`` pixels (single linkage)."""
    groups: list[list[int]] = []
    for index, (px, py) in enumerate(points):
        near = [g for g in groups if any(math.dist(points[i], (px, py)) < distance for i in g)]
        merged = [i for g in near for i in g] + [index]
        groups = [g for g in groups if g not in near] + [sorted(merged)]
    return groups


def merge_labels(labels: Sequence[str]) -> str:
    """One label for points drawn on top of each other.

    Overrides shared by all are written once and a single differing key lists its values
    (``cache=none threshold=0.05,0.1``); anything else is one label per line.
    """
    unique = list(dict.fromkeys(labels))
    if len(unique) == 1:
        return unique[0]
    token_lists = [label.split(" ") for label in unique]
    common = [t for t in token_lists[0] if all(t in tokens for tokens in token_lists[1:])]
    rests = [[t for t in tokens if t not in common] for tokens in token_lists]
    keys = {rest[0].partition("=")[0] for rest in rests if len(rest) == 1}
    if all(len(rest) == 1 for rest in rests) and len(keys) == 1:
        key = keys.pop()
        values = ",".join(rest[0].partition("=")[2] for rest in rests)
        return " ".join(common + [f"{key}={values}"])
    return "\n".join(unique)


def _overlap(a: tuple, b: tuple) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return width * height if width > 0 and height > 0 else 0.0


def _outside(extent: tuple, frame: tuple) -> float:
    area = (extent[2] - extent[0]) * (extent[3] - extent[1])
    return area - _overlap(extent, frame)


def _speedup_bars(axes, cells: Sequence[Cell], labels: dict[str, str]) -> None:
    """Fallback without PSNR: one horizontal bar per cell's speedup, and how to get the scatter."""
    shown = [c for c in cells if c.ok and c.speedup is not None]
    if len(shown) > _MAX_BAR_LABELS:
        # Full labels would overlap at this many rows; the cell number leads to the row in summary.md.
        labels = {c.name: f"#{c.job_num}" if c.job_num is not None else c.name for c in shown}
    axes.text(0.5, 1.02, "no PSNR recorded: run the sweep with report=quality for speedup vs quality",
              transform=axes.transAxes, ha="center", va="bottom", fontsize=8, color="#555555")
    if not shown:
        axes.text(0.5, 0.5, "no speedups either: add cache=none to the sweep (the reference) or use report=quality",
                  transform=axes.transAxes, ha="center", va="center", fontsize=9)
        axes.set_axis_off()
        return
    positions = range(len(shown))
    # Shrink the text with the row height (the axes are about 250 pt tall) so rows never overlap.
    size = max(4.0, min(LABEL_SIZE, 0.85 * 250 / len(shown)))
    axes.barh(list(positions), [c.speedup for c in shown], color=[FRONT_COLOR if c.speedup > 1 else OTHER_COLOR for c in shown])
    axes.set_xlim(0, max(c.speedup for c in shown) * 1.12)  # room for the value printed after each bar
    axes.set_yticks(list(positions), labels=[labels[c.name] for c in shown], fontsize=size)
    axes.invert_yaxis()
    axes.axvline(1.0, color="black", linestyle=":", linewidth=1.0)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}×"))
    axes.set_xlabel("speedup vs the no-acceleration cell (higher is better)")
    for position, cell in zip(positions, shown):
        axes.text(cell.speedup, position, f" {cell.speedup:.2f}×", va="center", fontsize=size)
