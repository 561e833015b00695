"""Benchmarks: accelerated vs plain diffusers on the same pipeline, side by side in one run.

Every benchmark module adds its table to ``interleave.TABLES``; they are printed at the end of the
session whether the run passed or failed (pytest would otherwise hide them on a passing run).
"""

import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/interleave.py

from interleave import TABLES  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for table in TABLES:
        terminalreporter.write_sep("-", "dit_engine benchmark")
        terminalreporter.write_line(table)
