"""A sweep's progress: ``cell i/N`` with the time spent and an estimate of the time left, logged
as each cell ends (a Hydra callback, :class:`SweepProgressCallback`, registered in
``conf/config.yaml``).

N is the grid's size (:func:`~dit_engine.cli.sweep.sweep_cells`), or an Optuna sweep's
``hydra.sweeper.n_trials``. The estimate is the mean time of the cells so far times the cells
left: the first cell carries the reference run and warm-up, so early estimates run high.
Launchers that run cells in other processes (joblib) report their own progress instead.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dit_engine.cli.sweep import sweep_cells
from dit_engine.errors import DitEngineError

log = logging.getLogger("dit_engine.sweep")


def duration(seconds: float) -> str:
    """``4.2 s`` under a minute, else ``0:07:28`` (hours, minutes and seconds)."""
    return f"{seconds:.1f} s" if seconds < 60 else str(datetime.timedelta(seconds=round(seconds)))


class SweepProgressCallback(Callback):
    """Logs ``sweep: cell i/N done ...; elapsed, about T left`` after every cell of a multirun."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.started: float | None = None
        self.cell_started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started, self.done = time.monotonic(), 0
        trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
        try:
            self.total = int(trials) if trials else len(sweep_cells(config))
        except DitEngineError:  # the plan check says why, once
            self.total = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.cell_started = time.monotonic()

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if self.started is None:  # a single run: nothing to count
            return
        self.done += 1
        now = time.monotonic()
        elapsed = now - self.started
        of = f"/{self.total}" if self.total else ""
        cell = now - (self.cell_started if self.cell_started is not None else now)
        line = f"sweep: cell {self.done}{of} done in {duration(cell)}; {duration(elapsed)} elapsed"
        if self.total and self.done < self.total:
            line += f", about {duration(elapsed / self.done * (self.total - self.done))} left"
        log.info(line)
