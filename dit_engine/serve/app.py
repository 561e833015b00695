"""The HTTP API (FastAPI): the OpenAI Images API shape over a :class:`ServingEngine`.

* ``POST /v1/images/generations``: ``prompt``, ``n``, ``size`` (``"WxH"``), ``response_format``
  (``b64_json``, the default, or ``url``), plus ``num_inference_steps``, ``guidance_scale``,
  ``seed``, ``negative_prompt``; each image also carries what the engine measured
  (``dit_engine``: latency, compute fraction, cache hits).
* ``GET /v1/images/{id}.png`` (``response_format=url``), ``GET /health``, ``GET /v1/models``,
  ``GET /metrics`` (Prometheus text); ``/v1/images/edits``, ``/v1/loras``, ``/v1/videos``.

One router per resource (:mod:`dit_engine.serve.routes`). Every error is JSON in OpenAI's shape,
``{"error": {"message": "<one line>", "type": ...}}``: 400 for a request the model cannot serve,
401 without the API key, 408 for a body that did not arrive within ``serve.request_timeout_s``, 413
for a body over ``serve.max_body_mb`` (counted as it arrives, chunked too), 422 for a malformed
body, unknown fields, a field outside the server's limits (``serve.max_steps``...) or a number that
is not finite, 429 (with ``Retry-After``) when the queue is full, 500 when generation failed (NaN /
Inf output included), 503 while the server shuts down, 504 past ``serve.request_timeout_s``; the
server keeps serving after each.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from dit_engine.serve.engine import ServingEngine
from dit_engine.serve.guard import Guard
from dit_engine.serve.responses import error
from dit_engine.serve.routes import health, images, loras, models, videos
from dit_engine.serve.routes.images import ImageGenerationRequest


def create_app(engine: ServingEngine) -> FastAPI:
    """The FastAPI application serving ``engine``: every router behind the :class:`Guard` (API key,
    body size and deadline), errors in OpenAI's one-line shape."""
    app = FastAPI(title="dit_engine", version="1", docs_url=None, redoc_url=None)
    app.state.engine = engine  # for the routers' Engine dependency
    app.add_middleware(Guard, serve=engine.serve)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    for router in (health.router, models.router, images.router, loras.router, videos.router):
        app.include_router(router)
    return app


async def _invalid(request: Request, exc: RequestValidationError):
    return error(422, _one_line(exc.errors()))


async def _http_error(request: Request, exc: HTTPException):
    """404 for an unknown path..., in the same shape as every other error."""
    return error(exc.status_code, str(exc.detail), headers=exc.headers)


def _one_line(errors: list) -> str:
    """FastAPI's validation errors as one line: the first, where it is and what is wrong."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        message = "unknown field; the fields are " + ", ".join(ImageGenerationRequest.model_fields)
    elif first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    return f"{where}: {message}" if where else message
