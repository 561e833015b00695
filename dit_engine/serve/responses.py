"""Error answers in OpenAI's shape, ``{"error": {"message": "<one line>", "type": ...}}``, and the
status code of each of the engine's refusals (:mod:`dit_engine.serve.errors`)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from dit_engine.console import one_line
from dit_engine.serve.errors import (BadRequestError, LimitError, QueueFullError, RequestCancelledError,
                                     RequestTimeoutError, ServerStoppingError)
from dit_engine.serve.metrics import Metrics


def error(status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    """An error answer with HTTP ``status``."""
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def refused(metrics: Metrics, err: Exception) -> JSONResponse:
    """The answer to a request refused or failed with ``err``, counted in ``metrics``."""
    if isinstance(err, (LimitError, BadRequestError)):
        metrics.count("bad_request")
        return error(422 if isinstance(err, LimitError) else 400, str(err))
    if isinstance(err, QueueFullError):  # counted by ServingEngine.submit
        return error(429, str(err), "rate_limit_error", headers={"Retry-After": "1"})
    if isinstance(err, ServerStoppingError):
        metrics.count("rejected")
        return error(503, str(err), "server_error")
    if isinstance(err, RequestTimeoutError):
        metrics.count("timeout")
        return error(504, str(err), "server_error")
    if isinstance(err, RequestCancelledError):  # nobody reads it
        metrics.count("cancelled")
        return error(499, str(err))
    metrics.count("error")  # NonFiniteOutputError's one line names the likely cause
    return error(500, one_line(err), "server_error")
