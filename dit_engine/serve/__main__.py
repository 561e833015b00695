"""``python -m dit_engine.serve [overrides]``: serve the plan the same overrides give a run.

::

    python -m dit_engine.serve                                   # the embedded tiny model, CPU, offline
    python -m dit_engine.serve model=flux model.pretrained=... cache=dbcache serve.port=8000

Bad input (an unknown option, a ``serve.*`` setting out of range, a plan the model refuses, a port
in use) is one line on stderr and exit code 2, before anything is served. SIGTERM stops the
server within 10 s, even during a long request (queued and running requests answer 503; the
running pipeline call stops at its next transformer call): one line, exit code 143. Ctrl-C does
the same with exit code 130. Needs the ``serve`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

import signal
import sys
import threading

from dit_engine.errors import DitEngineError, PlanError


def fail(message: str, code: int = 2) -> None:
    print(f"dit_engine.serve: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Serve until stopped: Ctrl-C exits 130 and SIGTERM 143, one line each, at any moment (while
    torch imports and the model loads too)."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    from dit_engine.cli import Terminated, stop_exit_code, stop_on_sigterm

    stop_on_sigterm()
    try:
        _serve(args)
    except KeyboardInterrupt as stop:  # Ctrl-C; or SIGTERM (while ranks serve: serve_on_ranks stopped them first)
        print(f"dit_engine.serve: stopped ({'SIGTERM' if isinstance(stop, Terminated) else 'SIGINT'})", file=sys.stderr)
        sys.exit(stop_exit_code(stop))


def _serve(args: list[str]) -> None:
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
        from dit_engine.serve.settings import serve_problems

        problems = serve_problems(session.cfg.serve)  # before the plan and the weights: fail fast
        if problems:
            raise PlanError(problems)
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


#: the largest request head (request line and headers) in bytes; beyond, h11 answers 400
MAX_HEADER_BYTES = 16 * 1024
#: how long uvicorn waits for open requests after SIGTERM before closing them: a backstop only,
#: since the engine answers its waiting requests 503 as soon as the signal arrives
SHUTDOWN_GRACE_S = 3


def serve_http(engine) -> None:
    """Serve ``engine`` with uvicorn until stopped (SIGTERM, Ctrl-C); close it afterwards.

    uvicorn re-raises the signal it caught once it has shut down; in the single-process server it
    is noted instead (the default SIGTERM action would kill the process before the engine is
    closed), then raised as KeyboardInterrupt / :class:`~dit_engine.cli.Terminated` once the engine
    is closed, for :func:`main`'s one line and exit code (130 / 143). Under a parallel plan (rank 0)
    the signal is left to the ranks' own handling."""
    import uvicorn

    from dit_engine.serve.app import create_app

    session, serve = engine.session, engine.serve
    print(f"dit_engine.serve: model={session.adapter.name} ({engine.model_id()}) on http://{serve.host}:{serve.port} "
          f"(POST /v1/images/generations; plan: {', '.join(s.name for s in session.plan.steps)})", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(engine), host=serve.host, port=serve.port, log_level="warning",
                            http=header_timeout_protocol(serve.header_timeout_s), timeout_keep_alive=serve.keep_alive_s,
                            limit_concurrency=serve.max_connections, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    caught: list[int] = []
    previous = {}
    if engine.ranks == 1 and threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _server(config, engine).run()
    finally:
        engine.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        from dit_engine.cli import Terminated

        raise Terminated if caught[0] == signal.SIGTERM else KeyboardInterrupt


def _server(config, engine):
    """uvicorn's server, also telling ``engine`` when a signal starts the shutdown, so that waiting
    and running requests end at once (503) instead of holding the shutdown up."""
    import uvicorn

    class EngineServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            engine.stop()  # sets an event: safe inside a signal handler
            super().handle_exit(sig, frame)

    return EngineServer(config)


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete within
    ``seconds`` of it opening (or of its previous response): uvicorn itself has no such timeout,
    so a client trickling its headers a byte at a time would hold a connection forever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._header_timer.cancel()
            if not self.transport.is_closing():  # a keep-alive connection: the next request's headers
                self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def connection_lost(self, exc) -> None:
            self._header_timer.cancel()
            super().connection_lost(exc)

        def _headers_too_slow(self) -> None:
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if waiting_for_headers and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

    return HeaderTimeoutProtocol


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
