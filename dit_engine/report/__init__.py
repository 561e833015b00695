"""Sweep reports: a table, a Markdown summary and a speedup-vs-quality plot per Hydra sweep.

``python -m dit_engine.report <sweep dir>`` (re)writes them; :class:`SweepReportCallback`,
registered under ``hydra.callbacks``, writes them when a ``-m`` sweep ends.
"""

from dit_engine.report.callback import SweepReportCallback
from dit_engine.report.sweep import Cell, SweepReportError, collect_cells, write_sweep_report

__all__ = ["Cell", "SweepReportCallback", "SweepReportError", "collect_cells", "write_sweep_report"]
