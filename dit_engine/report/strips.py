"""The compute strip: which denoising steps each cache computed, reused or forecast, as a picture.

One row per cache, CFG branch and request (``metrics.json``: ``compute.transforms.<cache>.branches
.<branch>.masks``, one character per step: ``1`` computed, ``0`` cached), one square per step:
computed steps dark blue, cached steps light grey, or orange where a calibrator forecast them
instead of reusing the last residual. Above the rows, the share of block forwards computed (a
cached step still runs its front blocks, so it is above the share of steps). PIL only: no plotting
library, so every run can afford one (``compute_strip.png`` in the run folder).
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw, ImageFont

COMPUTED = (31, 119, 180)
CACHED = (217, 217, 217)
FORECAST = (255, 127, 14)
BACKGROUND = (255, 255, 255)
TEXT = (40, 40, 40)
CELL = 12  # pixels per step
ROW = 16  # pixels per row (a cell and its gap)
MARGIN = 6


def strip_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, mask)`` of every request of every CFG branch of every cache in ``metrics``."""
    rows = []
    transforms = (metrics.get("compute") or {}).get("transforms") or {}
    for name, stats in transforms.items():
        branches = stats.get("branches") if isinstance(stats, dict) else None
        for branch, info in (branches or {}).items():
            masks = [m for m in (info.get("masks") or []) if isinstance(m, str) and m]
            for index, mask in enumerate(masks):
                request = f" request {index + 1}" if len(masks) > 1 else ""
                rows.append((f"{name.split('.', 1)[-1]} {branch}{request}", mask))
    return rows


def forecasts(metrics: dict[str, Any]) -> bool:
    """Whether a calibrator forecast the cached steps (``config.calibrator.name`` not ``none``)."""
    calibrator = ((metrics.get("config") or {}).get("calibrator") or {}).get("name")
    return calibrator not in (None, "none")


def compute_strip(metrics: dict[str, Any]) -> Image.Image | None:
    """The strip of a run's ``metrics.json`` (None when no cache recorded per-step decisions)."""
    rows = strip_rows(metrics)
    if not rows:
        return None
    font = ImageFont.load_default()
    reused = FORECAST if forecasts(metrics) else CACHED
    label_width = max(int(font.getlength(label)) for label, _ in rows) + 2 * MARGIN
    steps = max(len(mask) for _, mask in rows)
    fraction = (metrics.get("compute") or {}).get("compute_fraction")
    title = f"{steps} steps; {100 * fraction:.1f} % of block forwards computed" if fraction is not None else f"{steps} steps"
    legend = [("computed", COMPUTED), ("forecast" if reused == FORECAST else "cached", reused)]
    width = max(label_width + steps * CELL + MARGIN, int(font.getlength(title)) + 2 * MARGIN, 260)
    height = ROW * (len(rows) + 2) + 2 * MARGIN
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, MARGIN), title, fill=TEXT, font=font)
    for row, (label, mask) in enumerate(rows, start=1):
        top = MARGIN + row * ROW
        draw.text((MARGIN, top + 1), label, fill=TEXT, font=font)
        for step, decision in enumerate(mask):
            left = label_width + step * CELL
            draw.rectangle([left, top, left + CELL - 2, top + CELL - 1], fill=COMPUTED if decision == "1" else reused)
    top = MARGIN + (len(rows) + 1) * ROW
    left = MARGIN
    for name, color in legend:
        draw.rectangle([left, top, left + CELL - 2, top + CELL - 1], fill=color)
        draw.text((left + CELL + 2, top + 1), name, fill=TEXT, font=font)
        left += CELL + 10 + int(font.getlength(name))
    return image
