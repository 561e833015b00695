"""Real servers for tests and benchmarks: a free port of 127.0.0.1, and ``python -m dit_engine.serve``
started on one and waited for until ``/health`` answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: list[str], cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                 timeout_s: float = 120) -> tuple[subprocess.Popen, str, int]:
    """``python -m dit_engine.serve *args serve.port=<free>`` (offline; ``env`` added to this
    process's environment; stderr piped): the process, its URL and port, once ``/health``
    answers. RuntimeError, with the server's last output, when it exits first or stays silent
    for ``timeout_s`` (then it is killed)."""
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "dit_engine.serve", *args, f"serve.port={port}"], cwd=cwd,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url, port
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"the server did not answer /health within {timeout_s:g} s")
