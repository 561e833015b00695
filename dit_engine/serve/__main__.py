"""``python -m dit_engine.serve [overrides]``: serve the plan the same overrides give a run.

::

    python -m dit_engine.serve                                   # the embedded tiny model, CPU, offline
    python -m dit_engine.serve model=flux model.pretrained=... cache=dbcache serve.port=8000

Bad input (an unknown option, a plan the model refuses, a port in use) is one line on stderr and
exit code 2, before anything is served. Needs the ``serve`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

import sys

from dit_engine.errors import DitEngineError


def fail(message: str, code: int = 2) -> None:
    print(f"dit_engine.serve: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    try:
        import uvicorn  # noqa: F401

        import dit_engine.serve.app  # noqa: F401
    except ImportError as err:
        fail(f"serving needs FastAPI and uvicorn ({err.name} is missing): pip install -e '.[serve]'")
    from dit_engine.cli import one_line
    from dit_engine.console import quiet_known_noise
    from dit_engine.parallel.launch import RankFailedError
    from dit_engine.parallel.mesh import bind_local_device, launched_world, rank_from_env
    from dit_engine.plan import parallel_world_size
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.serve.ranks import serve_on_ranks, serve_rank
    from dit_engine.session import Session

    quiet_known_noise()
    try:
        if any(a.startswith("-m") or a == "--multirun" for a in args):
            raise DitEngineError("a server runs one plan: drop -m and the sweep's comma lists")
        session = Session.from_overrides(args)
        session.prepare()
        if session.cfg.dry_run:
            print(session.plan.explain(), end="")
            return
        if rank_from_env() == 0:
            _port_free(session.cfg.serve.host, session.cfg.serve.port)
        world = parallel_world_size(session.cfg)
        if world > 1 and launched_world() is None:
            # Rank 0 serves HTTP, every rank runs each request (dit_engine.serve.ranks).
            print(f"dit_engine.serve: starting {world} ranks (rank 0 serves HTTP)", file=sys.stderr, flush=True)
            serve_on_ranks(session, session.overrides, world)
        elif world > 1:  # under torchrun: this process is one rank
            bind_local_device(session.cfg.model.device)
            serve_rank(session, serve_http)
        else:
            serve_http(ServingEngine(session))
    except (DitEngineError, RankFailedError) as err:
        fail(one_line(err))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as err:  # the launcher stopped by a signal (SIGTERM): the ranks are gone
        if type(err).__name__ != "SignalException":
            raise
        print(f"dit_engine.serve: stopped ({one_line(err)})", file=sys.stderr)


def serve_http(engine) -> None:
    """Serve ``engine`` with uvicorn until stopped; close it afterwards."""
    import uvicorn

    from dit_engine.serve.app import create_app

    session, serve = engine.session, engine.serve
    print(f"dit_engine.serve: model={session.adapter.name} ({engine.model_id()}) on http://{serve.host}:{serve.port} "
          f"(POST /v1/images/generations; plan: {', '.join(s.name for s in session.plan.steps)})", file=sys.stderr, flush=True)
    try:
        uvicorn.run(create_app(engine), host=serve.host, port=serve.port, log_level="warning")
    finally:
        engine.close()


def _port_free(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise DitEngineError(f"cannot listen on {host}:{port} ({err.strerror}); pick another with serve.port=<port>") from None


if __name__ == "__main__":
    main()
