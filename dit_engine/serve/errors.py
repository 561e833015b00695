"""Why the server refuses or fails a request: one error class per HTTP answer
(:func:`dit_engine.serve.responses.refused` maps them to status codes)."""

from __future__ import annotations

from dit_engine.errors import DitEngineError


class QueueFullError(DitEngineError):
    """The request queue is full: retry later (HTTP 429)."""


class BadRequestError(DitEngineError):
    """The request cannot be served by this model (HTTP 400)."""


class LimitError(DitEngineError):
    """A request field outside the server's limits (``serve.max_steps``...), a non-finite number, or
    a LoRA with non-finite weights (HTTP 422)."""


class RequestTimeoutError(DitEngineError):
    """The request waited and ran past ``serve.request_timeout_s`` (HTTP 504)."""


class ServerStoppingError(DitEngineError):
    """The server is shutting down: the request was not run, or was stopped (HTTP 503)."""


class RequestCancelledError(DitEngineError):
    """The request's client went away: nobody waits for the result."""
