"""``summary.html``: the sweep as pictures: the speedup-vs-PSNR plot, then one row per cell with
its numbers (flags included), its contact sheet and its compute strip.

Each cell's strip is the ``compute_strip.png`` its run wrote; a cell run before strips existed
gets one drawn from its ``metrics.json`` into ``.strips/`` beside the page (hidden, like
``.hydra``: it is no cell). Images are linked by paths relative to the sweep folder: the folder
can be moved or served as it is.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from dit_engine.atomic import atomic_path
from dit_engine.report.cells import Cell
from dit_engine.report.strips import compute_strip

STRIPS = ".strips"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 10px; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
.flag { color: #b35900; font-size: 0.9em; }
img.sheet { max-width: 360px; }
"""


def write_strips(sweep_dir: Path, cells: list[Cell]) -> dict[str, str]:
    """Each cell's compute strip (its run's, else drawn into ``.strips/<cell folder>.png``); cell
    name -> path relative to the sweep folder, for cells whose metrics hold per-step decisions."""
    found = {}
    for cell in cells:
        own = cell.dir / "compute_strip.png"
        if own.is_file():
            found[cell.name] = _relative(own, sweep_dir)
            continue
        try:
            metrics = json.loads((cell.dir / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        strip = compute_strip(metrics) if isinstance(metrics, dict) else None
        if strip is None:
            continue
        relative = f"{STRIPS}/{cell.name}.png"
        target = sweep_dir / relative
        target.parent.mkdir(exist_ok=True)
        with atomic_path(target) as temporary:
            strip.save(temporary, format="PNG")
        found[cell.name] = relative
    return found


def summary_html(sweep_dir: Path, cells: list[Cell], name: str, plot: str, strips: dict[str, str]) -> str:
    """The page's HTML (see the module docstring); ``plot`` is the plot's file name."""
    rows = "\n".join(_row(sweep_dir, cell, strips.get(cell.name)) for cell in cells)
    title = html.escape(f"Sweep {name}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<p><img src="{html.escape(plot)}" alt="speedup vs PSNR of every cell"></p>
<p>Rows in job order. ★: on the Pareto front (speedup and PSNR). The strip shows each denoising
step of each cache and CFG branch: computed, cached, or forecast by a calibrator.
summary.md and summary.csv hold the same numbers.</p>
<table>
<tr><th>cell</th><th>speedup</th><th>compute</th><th>PSNR</th><th>contact sheet</th><th>compute strip</th></tr>
{rows}
</table>
</body></html>
"""


def _row(sweep_dir: Path, cell: Cell, strip: str | None) -> str:
    flags = [text for text in (cell.untrusted_speedup and f"untrusted: {cell.untrusted_speedup}",
                               cell.timing_outlier and f"timing outlier: {cell.timing_outlier}",
                               cell.untrusted_timing and f"shared cores: {cell.untrusted_timing}",
                               None if cell.ok else f"FAILED: {cell.error}") if text]
    speedup = "—" if cell.speedup is None else f"{cell.speedup:.2f}×" + (" ⚠" if cell.untrusted_speedup else "")
    compute = "—" if cell.compute_fraction is None else f"{100 * cell.compute_fraction:.1f} %"
    psnr = "—" if cell.psnr is None else ("identical" if cell.psnr == math.inf else f"{cell.psnr:.2f} dB")
    sheet = cell.dir / "contact_sheet.png"
    sheet_html = (f'<img class="sheet" src="{html.escape(_relative(sheet, sweep_dir))}" alt="contact sheet of {html.escape(cell.name)}">'
                  if sheet.is_file() else "—")
    strip_html = f'<img src="{html.escape(strip)}" alt="compute strip of {html.escape(cell.name)}">' if strip else "—"
    label = html.escape(cell.label or cell.name) + (" ★" if cell.pareto else "")
    notes = "".join(f'<div class="flag">{html.escape(flag)}</div>' for flag in flags)
    return (f"<tr><td>{label}{notes}</td><td class=\"num\">{speedup}</td><td class=\"num\">{compute}</td>"
            f"<td class=\"num\">{psnr}</td><td>{sheet_html}</td><td>{strip_html}</td></tr>")


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()
