"""The row type of a sweep report, shared by :mod:`~dit_engine.report.sweep` and :mod:`~dit_engine.report.plot`.

Kept apart so that the plot module does not import the sweep module (which imports the plot).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Cell:
    """One sweep cell as read from its directory.

    Numbers are ``None`` when unknown (failed cell, metric not recorded); ``psnr`` is ``math.inf``
    when the cell's images are identical to the reference and ``None`` without ``report=quality``.
    """

    name: str  #: directory relative to the sweep dir, e.g. ``0_cache=none,cache.threshold=0.1``
    dir: Path
    overrides: list[str]
    status: str  #: ``"ok"`` or ``"failed"``
    latency_s: float | None = None
    speedup: float | None = None
    compute_fraction: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    mae: float | None = None
    peak_memory_mb: float | None = None
    #: why the cell counts as failed (``None`` when ok)
    error: str | None = None
    #: where ``speedup`` came from: ``"quality"`` (report=quality's own reference run),
    #: ``"reference cell"`` (the sweep's no-acceleration cell) or ``None``
    speedup_source: str | None = None
    #: latency of report=quality's reference run, when recorded
    reference_latency_s: float | None = None
    #: why this cell's latency cannot be compared (cores shared with other cells), or None
    untrusted_timing: str | None = None
    #: True when no other cell is at least as fast and as good and strictly better in one
    pareto: bool = False
    #: hydra.runtime.choices of the cell (group -> option), empty when .hydra/hydra.yaml is missing
    choices: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the cell produced metrics."""
        return self.status == "ok"

    @property
    def job_num(self) -> int | None:
        """Hydra's job number, read from the directory name (``3_cache=...`` -> 3)."""
        match = re.match(r"(\d+)_", self.name)
        return int(match.group(1)) if match else None


def sweep_name(sweep_dir: str | os.PathLike) -> str:
    """A short name for the sweep: its last two path parts (``<date>/<time>`` for Hydra's default)."""
    parts = Path(sweep_dir).resolve().parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else str(sweep_dir)
