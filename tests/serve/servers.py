"""Real servers for the serving tests: ``python -m dit_engine.serve`` started on a free port of
127.0.0.1 (one torch thread) and waited for until ``/health`` answers (:mod:`dit_engine.testing.servers`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dit_engine.testing.servers import free_port, start_server as _start_server

__all__ = ["free_port", "start_server"]


def start_server(args: list[str], folder: Path) -> tuple[subprocess.Popen, str, int]:
    """``python -m dit_engine.serve *args serve.port=<free>`` in ``folder`` (stderr piped): the
    process, its URL and port, once ``/health`` answers (the test fails if it exits or stays
    silent for 120 s)."""
    try:
        return _start_server(args, cwd=folder, env={"OMP_NUM_THREADS": "1"})
    except RuntimeError as err:
        pytest.fail(str(err))
