"""Benchmarks: accelerated vs plain diffusers on the same pipeline, side by side in one run.

On a CPU torch is pinned to one intra-op and one inter-op thread, the setting under which the
process's own CPU time (the benchmarks' clock, benchmarks/interleave.py) holds while other jobs
share the cores. Every benchmark module adds its table to ``interleave.TABLES``; they are printed
at the end of the session whether the run passed or failed (pytest would otherwise hide them on a
passing run).
"""

import os
import sys
from pathlib import Path

from dit_engine.metrics.clock import pin_one_thread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pin_one_thread()
sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/interleave.py

from interleave import TABLES  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for table in TABLES:
        terminalreporter.write_sep("-", "dit_engine benchmark")
        terminalreporter.write_line(table)
