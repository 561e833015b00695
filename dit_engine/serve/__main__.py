"""``python -m dit_engine.serve [overrides]``: serve the plan the same overrides give a run.

::

    python -m dit_engine.serve                                   # the embedded tiny model, CPU, offline
    python -m dit_engine.serve model=flux model.pretrained=... cache=dbcache serve.port=8000
    python -m dit_engine.serve cache=dbcache serve.replicas=2        # two replicas on Ray Serve

Bad input (an unknown option, a ``serve.*`` setting out of range, a plan the model refuses, a port
in use) is one line on stderr and exit code 2, before anything is served. SIGTERM stops the
server within 10 s, even during a long request (queued and running requests answer 503; the
running pipeline call stops at its next transformer call): one line, exit code 143. Ctrl-C does
the same with exit code 130. Needs the ``serve`` extra (FastAPI, uvicorn); ``serve.replicas=N``
also the ``serve-ray`` extra (:mod:`dit_engine.serve.replicas`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import NoReturn

from dit_engine.cli.signals import Terminated, stop_exit_code, stop_on_sigterm
from dit_engine.console import fail as console_fail
from dit_engine.console import one_line, quiet_known_noise
from dit_engine.errors import DitEngineError, PlanError


def fail(message: str) -> NoReturn:
    """``dit_engine.serve: error: <message>`` on stderr, exit code 2 (bad input): the CLI's way."""
    console_fail(message, program="dit_engine.serve")


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until stopped (``argv`` defaults to ``sys.argv[1:]``): Ctrl-C exits 130 and SIGTERM
    143, one line each, at any moment (while torch imports and the model loads too), the CLI's
    way (:mod:`dit_engine.cli.signals`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    previous = stop_on_sigterm()
    try:
        _serve(args)
    except KeyboardInterrupt as stop:  # Ctrl-C; or SIGTERM (while ranks serve: they were stopped first)
        print(f"dit_engine.serve: stopped ({'SIGTERM' if isinstance(stop, Terminated) else 'SIGINT'})", file=sys.stderr)
        sys.exit(stop_exit_code(stop))
    finally:
        signal.signal(signal.SIGTERM, previous)  # main() may run inside a test's process


def _serve(args: list[str]) -> None:
    quiet_known_noise()  # before diffusers is imported, as the CLI does
    try:
        import dit_engine.serve.server  # noqa: F401 - FastAPI and uvicorn, checked first
    except ImportError as err:
        fail(f"serving needs FastAPI and uvicorn ({err.name} is missing): pip install -e '.[serve]'")
    # Imported here, after --help: the session, the engine and the launcher import torch.
    from dit_engine.launch.local import RankFailedError
    from dit_engine.parallel.mesh import bind_local_device, launched_world, rank_from_env
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.serve.ranks import serve_on_ranks, serve_rank
    from dit_engine.serve.server import serve_http
    from dit_engine.serve.settings import per_sample_session, serve_problems

    try:
        if any(a.startswith("-m") or a == "--multirun" for a in args):
            raise DitEngineError("a server runs one plan: drop -m and the sweep's comma lists")
        session = per_sample_session(args)
        problems = serve_problems(session.cfg.serve)  # before the plan and the weights: fail fast
        if problems:
            raise PlanError(problems)
        session.prepare()
        if session.cfg.dry_run:
            print(session.plan.explain(), end="")
            return
        if rank_from_env() == 0 and not (session.cfg.serve.replicas > 1 and os.environ.get("RAY_ADDRESS")):
            _port_free(session.cfg.serve.host, session.cfg.serve.port)  # (on a cluster, the proxy may be elsewhere)
        world = session.plan.world_size
        if session.cfg.serve.replicas > 1:
            from dit_engine.serve.replicas import serve_replicas

            serve_replicas(session)
        elif world > 1 and launched_world() is None:
            # Rank 0 serves HTTP, every rank runs each request (dit_engine.serve.ranks).
            print(f"dit_engine.serve: starting {world} ranks (rank 0 serves HTTP)", file=sys.stderr, flush=True)
            serve_on_ranks(session, world)
        elif world > 1:  # under torchrun: this process is one rank
            bind_local_device(session.cfg.model.device)
            serve_rank(session)
        else:
            serve_http(ServingEngine(session))
    except (DitEngineError, RankFailedError) as err:
        fail(one_line(err))


def _port_free(host: str, port: int) -> None:
    """DitEngineError when nothing can listen on ``host:port`` (a port in use...)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise DitEngineError(f"cannot listen on {host}:{port} ({err.strerror}); pick another with serve.port=<port>") from None


if __name__ == "__main__":
    main()
