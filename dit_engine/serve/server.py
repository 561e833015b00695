"""The HTTP server: uvicorn serving :func:`~dit_engine.serve.app.create_app` until a signal stops it.

uvicorn lacks two defences this adds: a timeout for request headers (a client trickling its
headers a byte at a time would hold a connection forever) and telling the engine when shutdown
starts, so that waiting and running requests end at once (503) instead of holding it up.
"""

from __future__ import annotations

import signal
import sys
import threading

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from dit_engine.cli.signals import Terminated
from dit_engine.serve.app import create_app
from dit_engine.serve.engine import ServingEngine

#: the largest request head (request line and headers) in bytes; beyond, h11 answers 400
MAX_HEADER_BYTES = 16 * 1024
#: how long uvicorn waits for open requests after SIGTERM before closing them: a backstop only,
#: since the engine answers its waiting requests 503 as soon as the signal arrives
SHUTDOWN_GRACE_S = 3


def serve_http(engine: ServingEngine) -> None:
    """Serve ``engine`` with uvicorn until stopped (SIGTERM, Ctrl-C); close it afterwards.

    uvicorn re-raises the signal it caught once it has shut down; in the single-process server it
    is noted instead (the default SIGTERM action would kill the process before the engine is
    closed), then raised as KeyboardInterrupt / :class:`~dit_engine.cli.signals.Terminated` once
    the engine is closed, for the entry point's one line and exit code (130 / 143). Under a
    parallel plan (rank 0) the signal is left to the ranks' own handling."""
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
        EngineServer(config, engine).run()
    finally:
        engine.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise Terminated if caught[0] == signal.SIGTERM else KeyboardInterrupt


class EngineServer(uvicorn.Server):
    """uvicorn's server, also telling ``engine`` when a signal starts the shutdown, so that waiting
    and running requests end at once (503) instead of holding the shutdown up."""

    def __init__(self, config: uvicorn.Config, engine: ServingEngine):
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig, frame) -> None:
        self.engine.stop()  # sets an event: safe inside a signal handler
        super().handle_exit(sig, frame)


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete within
    ``seconds`` of it opening (or of its previous response): uvicorn itself has no such timeout,
    so a client trickling its headers a byte at a time would hold a connection forever."""

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
