"""The row type of a sweep report, shared by :mod:`~dit_engine.report.sweep` and :mod:`~dit_engine.report.plot`.

Kept apart so that the plot module does not import the sweep module (which imports the plot).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
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
    #: seconds of report=quality's reference run on the speedup's clock (wall for runs that
    #: recorded no clock), when recorded
    reference_latency_s: float | None = None
    #: the clock the speedup was timed on (``cpu_time``, ``cuda_events``, ``wall``), when recorded
    speedup_clock: str | None = None
    #: why this cell's latency cannot be compared (cores shared with other cells), or None
    untrusted_timing: str | None = None
    #: why this cell's speedup is not comparable: its own reference run took far longer (or
    #: shorter) than the other cells' reference runs of the same workload (a load spike); None if not
    timing_outlier: str | None = None
    #: why this cell's speedup cannot be true: above ``1 / compute_fraction``, the most that
    #: skipping work can give (its reference was timed under slower conditions); None if not
    untrusted_speedup: str | None = None
    #: key of the reference the cell was compared with (cells with one key ran one workload)
    reference_key: str | None = None
    #: how the report names the cell: its job number and the overrides that differ between cells
    #: (``#3 cache=fbcache threshold=0.1``); set by ``collect_cells``, the directory name until then
    label: str = ""
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


def sweep_name(sweep_dir: str | os.PathLike, cells: Sequence[Cell] = ()) -> str:
    """A short name for the sweep, for titles: the experiment it ran (``tiny_caches_vs_peers``),
    else what it swept (``cache × threshold``), else Hydra's ``<date>/<time>`` under a ``sweeps``
    folder, else the folder's own name (never the scratch path it sits in)."""
    experiments = {c.choices.get("experiment") for c in cells}
    if len(experiments) == 1 and None not in experiments:
        return str(experiments.pop())
    varying = varying_keys(cells)
    if varying:
        return "over " + " × ".join(_short_keys(varying).values())
    parts = Path(sweep_dir).resolve().parts
    if len(parts) >= 3 and parts[-3] == "sweeps":
        return "/".join(parts[-2:])
    return parts[-1] if parts else str(sweep_dir)


def parse_overrides(overrides: Sequence[str]) -> dict[str, str]:
    """``["+cache=dbcache", "cache.threshold=0.1"]`` -> ``{"cache": "dbcache", "cache.threshold": "0.1"}``."""
    parsed = {}
    for override in overrides:
        key, _, value = override.partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def varying_keys(cells: Sequence[Cell]) -> list[str]:
    """Override keys whose value is not the same in every cell (in first-seen order)."""
    parsed = [parse_overrides(c.overrides) for c in cells]
    keys: list[str] = []
    for overrides in parsed:
        keys += [k for k in overrides if k not in keys]
    return [k for k in keys if len({overrides.get(k) for overrides in parsed}) > 1]


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Each key by its last dotted part, unless two keys share it."""
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: t if tails.count(t) == 1 else k for k, t in zip(keys, tails)}


def short_labels(cells: Sequence[Cell]) -> dict[str, str]:
    """Per cell name, its overrides minus those equal in every cell, keys shortened to their last part.

    ``cache=dbcache cache.threshold=0.1`` in a sweep over both becomes ``cache=dbcache threshold=0.1``;
    a key's full dotted name is kept when two varying keys share the last part. A cell left with
    no override is labelled with its job number (``#0``).
    """
    varying = varying_keys(cells)
    short = _short_keys(varying)
    labels = {}
    for cell in cells:
        overrides = parse_overrides(cell.overrides)
        text = " ".join(f"{short[k]}={overrides[k]}" for k in varying if k in overrides)
        labels[cell.name] = text or (f"#{cell.job_num}" if cell.job_num is not None else cell.name)
    return labels


def display_names(cells: Sequence[Cell]) -> dict[str, str]:
    """Per cell name, how tables name it: ``#<job> <what differs>`` (``#3 cache=fbcache threshold=0.1``)."""
    names = {}
    labels = short_labels(cells)
    for cell in cells:
        label = labels[cell.name]
        number = f"#{cell.job_num}" if cell.job_num is not None else ""
        names[cell.name] = label if label.startswith("#") or not number else f"{number} {label}"
    return names
