"""Real servers for the serving tests: ``python -m dit_engine.serve`` started on a free port of
127.0.0.1 and waited for until ``/health`` answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: list[str], folder: Path) -> tuple[subprocess.Popen, str, int]:
    """``python -m dit_engine.serve *args serve.port=<free>`` in ``folder`` (stderr piped): the
    process, its URL and port, once ``/health`` answers (the test fails if it exits or stays
    silent for 120 s)."""
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "dit_engine.serve", *args, f"serve.port={port}"], cwd=folder,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url, port
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    pytest.fail("the server did not answer /health within 120 s")
