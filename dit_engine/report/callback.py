"""Hydra callback writing the sweep report when a multirun ends.

Register it in ``conf/config.yaml``::

    hydra:
      callbacks:
        sweep_report:
          _target_: dit_engine.report.SweepReportCallback
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReportCallback(Callback):
    """Writes ``summary.csv``, ``summary.md``, ``pareto.png`` and ``summary.html`` into the sweep dir after ``-m``.

    A report that cannot be written is logged as an error and otherwise ignored: the cells'
    own results are already on disk and must not be turned into a failed sweep by the summary.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the report for ``config.hydra.sweep.dir``; never raises."""
        sweep_dir = None
        try:
            # imported on use: the callback is built for every Hydra run, the report (and
            # matplotlib) is needed only at the end of a sweep
            from dit_engine.report.sweep import write_sweep_report

            sweep_dir = Path(str(config.hydra.sweep.dir))
            paths = write_sweep_report(sweep_dir)
            log.info("sweep report: %s (table %s, plot %s, page %s)", paths["md"], paths["csv"].name, paths["png"].name,
                     paths["html"].name)
        except Exception as err:  # noqa: BLE001 - a summary must never fail the sweep it summarizes
            where = sweep_dir if sweep_dir is not None else "the sweep directory"
            log.error("sweep report for %s not written: %s: %s; rerun `python -m dit_engine.report %s`",
                      where, type(err).__name__, err, where)
