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
        import uvicorn

        from dit_engine.serve.app import create_app
    except ImportError as err:
        fail(f"serving needs FastAPI and uvicorn ({err.name} is missing): pip install -e '.[serve]'")
    from dit_engine.cli import one_line
    from dit_engine.console import quiet_known_noise
    from dit_engine.serve.engine import ServingEngine
    from dit_engine.session import Session

    quiet_known_noise()
    try:
        session = Session.from_overrides(args)
        if session.cfg.parallel.name != "none":
            raise DitEngineError("parallel= is not served yet (rank 0 would have to broadcast each request); serve with parallel=none")
        if any(a.startswith("-m") or a == "--multirun" for a in args):
            raise DitEngineError("a server runs one plan: drop -m and the sweep's comma lists")
        session.prepare()
        if session.cfg.dry_run:
            print(session.plan.explain(), end="")
            return
        _port_free(session.cfg.serve.host, session.cfg.serve.port)
        engine = ServingEngine(session)
    except DitEngineError as err:
        fail(one_line(err))
    except KeyboardInterrupt:
        fail("interrupted before serving", 130)
    serve = session.cfg.serve
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
