"""The HTTP API (FastAPI): the OpenAI Images API shape over a :class:`ServingEngine`.

* ``POST /v1/images/generations``: ``prompt``, ``n``, ``size`` (``"WxH"``), ``response_format``
  (``b64_json``, the default, or ``url``), plus ``num_inference_steps``, ``guidance_scale``,
  ``seed``, ``negative_prompt``; each image also carries what the engine measured
  (``dit_engine``: latency, compute fraction, cache hits).
* ``GET /v1/images/{id}.png`` (``response_format=url``), ``GET /health``, ``GET /v1/models``,
  ``GET /metrics`` (Prometheus text).

Every error is JSON in OpenAI's shape, ``{"error": {"message": "<one line>", "type": ...}}``:
400 for a request the model cannot serve, 401 without the API key, 408 for a body that did not
arrive within ``serve.request_timeout_s``, 413 for a body over ``serve.max_body_mb`` (counted as it
arrives, chunked too), 422 for a malformed body, unknown fields, a field outside the server's
limits (``serve.max_steps``...) or a number that is not finite, 429 (with ``Retry-After``) when the
queue is full, 500 when generation failed (NaN / Inf output included), 503 while the server shuts
down, 504 past ``serve.request_timeout_s``; the server keeps serving after each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import secrets
import time
import uuid
from typing import Any, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from dit_engine.cli import one_line
from dit_engine.errors import DitEngineError
from dit_engine.serve.engine import (BadRequestError, ImageJob, LimitError, QueueFullError, RequestCancelledError,
                                     RequestTimeoutError, ServerStoppingError, ServingEngine)


class LoraChoice(BaseModel):
    """A loaded LoRA adapter and its strength, for one request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    scale: float = 1.0


class LoraLoad(BaseModel):
    """``POST /v1/loras``: load the LoRA at ``path`` (a local ``.safetensors`` file or a folder) as ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(min_length=1)


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations`` (OpenAI's fields and the engine's own)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)  # at most serve.max_prompt_chars (ServingEngine.check_limits)
    model: str | None = None
    n: int = 1
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    lora: str | LoraChoice | None = None
    user: str | None = None


class VideoRequest(BaseModel):
    """``POST /v1/videos`` (OpenAI's video fields and the engine's own)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    model: str | None = None
    size: str | None = None
    num_frames: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None


def _video_object(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def error(status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def _one_line(errors: list) -> str:
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = first.get("msg", "invalid request")
    if first.get("type") == "extra_forbidden":
        message = "unknown field; the fields are " + ", ".join(ImageGenerationRequest.model_fields)
    elif first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    return f"{where}: {message}" if where else message


def _size(size: str | None, max_side: int) -> tuple[int, int] | None:
    """``"WxH"`` as ``(width, height)``; a side of more than nine digits is refused here, before
    Python turns it into a number (the limit, ``serve.max_side``, is checked with the others)."""
    if size is None or size == "auto":
        return None
    parts = size.lower().split("x")
    digits = [p.lstrip("0") if p.isascii() and p.isdigit() else "" for p in parts]
    if len(parts) != 2 or not all(digits):
        raise BadRequestError(f"size={size!r}: give it as WIDTHxHEIGHT, e.g. 1024x1024")
    if any(len(d) > 9 for d in digits):
        raise LimitError(f"size={size}: each side is at most {max_side} pixels (serve.max_side)")
    return int(digits[0]), int(digits[1])


def _lora(choice: str | LoraChoice | None) -> tuple[str, float] | None:
    if choice is None:
        return None
    return (choice, 1.0) if isinstance(choice, str) else (choice.name, choice.scale)


class _BodyTooLarge(Exception):
    """The body passed ``serve.max_body_mb`` while it was arriving."""


class Guard:
    """ASGI middleware in front of every endpoint: the API key (401), then the whole body read
    here, counted as it arrives whatever its framing (Content-Length or chunked): past
    ``serve.max_body_mb`` it answers 413 at once, and a body that has not arrived within
    ``serve.request_timeout_s`` 408. The endpoint then reads the body from memory."""

    def __init__(self, app: Any, serve: Any):
        self.app = app
        self.serve = serve
        self.max_body = int(serve.max_body_mb * 1024 * 1024)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        serve, headers = self.serve, Headers(scope=scope)
        if serve.api_key and scope["path"] != "/health":
            token = headers.get("authorization", "")
            if not secrets.compare_digest(token.encode(), f"Bearer {serve.api_key}".encode()):
                await error(401, "missing or wrong API key: send Authorization: Bearer <serve.api_key>",
                            "authentication_error")(scope, receive, send)
                return
        too_large = error(413, f"the body is over {self.max_body} bytes; the limit is "
                               f"serve.max_body_mb={serve.max_body_mb:g} MB")
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_body:  # refused before a byte is read
            await too_large(scope, receive, send)
            return
        try:
            body = await asyncio.wait_for(self._body(receive), timeout=serve.request_timeout_s)
        except _BodyTooLarge:
            await too_large(scope, receive, send)
            return
        except asyncio.TimeoutError:
            await error(408, f"the body did not arrive within serve.request_timeout_s={serve.request_timeout_s:g} s")(
                scope, receive, send)
            return
        if body is None:  # the client left while sending it
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect

        await self.app(scope, replay, send)

    async def _body(self, receive: Any) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def create_app(engine: ServingEngine) -> FastAPI:
    """The FastAPI application serving ``engine``."""
    serve = engine.serve
    app = FastAPI(title="dit_engine", version="1", docs_url=None, redoc_url=None)
    app.add_middleware(Guard, serve=serve)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error(422, _one_line(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # 404 for an unknown path..., in the same shape
        return error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.model_id(), "queue_depth": engine.queue_depth(), "batching": engine.batching,
                "ranks": engine.ranks}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.model_id(), "object": "model", "created": 0,
                                            "owned_by": "dit_engine", "adapter": engine.adapter.name}]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(engine.prometheus(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/images/{image_id}.png")
    async def image(image_id: str):
        png = engine.images.get(image_id)
        if png is None:
            return error(404, f"no image {image_id} (images are kept for the last serve.keep_images={serve.keep_images})")
        return Response(png, media_type="image/png")

    @app.post("/v1/images/generations")
    async def generations(body: ImageGenerationRequest, request: Request):
        return await _generate(body, request)

    def refused(err: Exception) -> JSONResponse:
        """The answer to a request refused or failed with ``err`` (counted in /metrics)."""
        if isinstance(err, (LimitError, BadRequestError)):
            engine.count("bad_request")
            return error(422 if isinstance(err, LimitError) else 400, str(err))
        if isinstance(err, QueueFullError):
            return error(429, str(err), "rate_limit_error", headers={"Retry-After": "1"})
        if isinstance(err, ServerStoppingError):
            engine.count("rejected")
            return error(503, str(err), "server_error")
        if isinstance(err, RequestTimeoutError):
            engine.count("timeout")
            return error(504, str(err), "server_error")
        if isinstance(err, RequestCancelledError):  # nobody reads it
            engine.count("cancelled")
            return error(499, str(err))
        engine.count("error")  # NonFiniteOutputError's one line names the likely cause
        return error(500, one_line(err), "server_error")

    async def result(job: ImageJob, request: Request) -> Any:
        """The job's ``(images, stats)`` once the worker is done with it. Past its deadline, when
        the client leaves, or when the server stops, the job is cancelled (the worker drops it, or
        stops its pipeline call) and this raises at once: no answer waits on the pipeline."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def wake(_future) -> None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: the server has stopped
                loop.call_soon_threadsafe(done.set)

        job.future.add_done_callback(wake)
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), timeout=0.25)
            except asyncio.TimeoutError:
                reason = engine.unwanted(job)
                if reason is None and await request.is_disconnected():
                    reason = RequestCancelledError("the client went away")
                if reason is not None:
                    job.cancel()
                    raise reason
        return job.future.result()

    async def _generate(body: ImageGenerationRequest, request: Request, inputs: dict | None = None):
        started = time.perf_counter()
        try:
            settings = engine.settings(steps=body.num_inference_steps, guidance=body.guidance_scale,
                                       size=_size(body.size, serve.max_side), negative_prompt=body.negative_prompt,
                                       lora=_lora(body.lora))
            seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
            engine.check(body.prompt, settings, body.n, seed)
            job = engine.submit(body.prompt, body.n, seed, settings, inputs=inputs)
            images, stats = await result(job, request)
        except (DitEngineError, RuntimeError) as err:  # the worker's failures are RuntimeErrors (NonFiniteOutputError too)
            return refused(err)
        data = []
        for index, picture in enumerate(images):
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            png = buffer.getvalue()
            item = {"revised_prompt": None, "dit_engine": {**stats, "seed": seed + index}}
            if body.response_format == "b64_json":
                item["b64_json"] = base64.b64encode(png).decode()
            else:
                image_id = uuid.uuid4().hex
                engine.keep_image(image_id, png)
                item["url"] = str(request.base_url) + f"v1/images/{image_id}.png"
            data.append(item)
        engine.count("ok")
        with engine.lock:
            engine.metrics.observe(time.perf_counter() - started)
        return {"created": int(time.time()), "data": data}

    @app.post("/v1/images/edits")
    async def edits(request: Request, image: UploadFile = File(...), prompt: str = Form(..., min_length=1),
                    n: int = Form(1), size: str | None = Form(None), response_format: str = Form("b64_json"),
                    model: str | None = Form(None), num_inference_steps: int | None = Form(None),
                    guidance_scale: float | None = Form(None), seed: int | None = Form(None),
                    negative_prompt: str | None = Form(None), mask: UploadFile | None = File(None)):
        """OpenAI's image edit (multipart): ``image`` (and ``mask`` where the pipeline takes one)
        and ``prompt``, for edit pipelines (FLUX Kontext, Qwen-Image-Edit...)."""
        if not engine.takes("image"):
            engine.count("bad_request")
            return error(400, f"model {engine.model_id()} does not edit images (its pipeline takes no image); use /v1/images/generations")
        if response_format not in ("b64_json", "url"):
            return error(422, f"response_format={response_format!r}: use b64_json or url")
        from PIL import Image, UnidentifiedImageError

        inputs = {}
        for field_name, upload, argument in (("image", image, "image"), ("mask", mask, "mask_image")):
            if upload is None:
                continue
            if argument == "mask_image" and not engine.takes(argument):
                return error(400, f"model {engine.model_id()} takes no mask; drop the mask field")
            try:
                inputs[argument] = Image.open(io.BytesIO(await upload.read())).convert("RGB")
            except (UnidentifiedImageError, OSError):
                return error(400, f"{field_name}: not an image file PIL can read (PNG, JPEG, WebP...)")
        body = ImageGenerationRequest(prompt=prompt, n=n, size=size, response_format=response_format, model=model,
                                      num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                                      negative_prompt=negative_prompt)
        return await _generate(body, request, inputs)

    @app.get("/v1/loras")
    async def loras():
        return {"object": "list", "data": [{"name": n, "path": p} for n, p in engine.loras.items()]}

    @app.post("/v1/loras")
    async def load_lora(body: LoraLoad):
        """Load a LoRA from inside ``serve.lora_dirs``: 400 with one message for every path it may
        not load (no hint whether a file exists outside them), 422 for non-finite weights."""
        try:
            await asyncio.to_thread(engine.load_lora, body.name, body.path)
        except (BadRequestError, LimitError) as err:
            return refused(err)
        return {"name": body.name, "path": body.path, "loaded": True}

    @app.delete("/v1/loras/{name}")
    async def unload_lora(name: str):
        if not await asyncio.to_thread(engine.unload_lora, name):
            return error(404, f"no LoRA named {name!r} is loaded ({', '.join(engine.loras) or 'none'})")
        return {"name": name, "deleted": True}

    @app.post("/v1/videos")
    async def create_video(body: VideoRequest):
        if not engine.makes_video:
            engine.count("bad_request")
            return error(400, f"model {engine.model_id()} generates images; use POST /v1/images/generations")
        try:
            frames = body.num_frames if body.num_frames is not None else engine.session.workload.call_kwargs.get("num_frames")
            settings = engine.settings(steps=body.num_inference_steps, guidance=body.guidance_scale,
                                       size=_size(body.size, serve.max_side), negative_prompt=body.negative_prompt,
                                       num_frames=frames)
            seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
            engine.check(body.prompt, settings, seed=seed)
            record = engine.submit_video(body.prompt, seed, settings, engine.model_id())
        except DitEngineError as err:
            return refused(err)
        engine.count("ok")
        return _video_object(record)

    def _video(video_id: str):
        with engine.lock:
            return engine.videos.get(video_id)

    @app.get("/v1/videos/{video_id}")
    async def video_status(video_id: str):
        record = _video(video_id)
        if record is None:
            return error(404, f"no video {video_id}")
        return _video_object(record)

    @app.get("/v1/videos/{video_id}/content")
    async def video_content(video_id: str):
        record = _video(video_id)
        if record is None:
            return error(404, f"no video {video_id}")
        if record["status"] != "completed":
            return error(409, f"video {video_id} is {record['status']}; poll GET /v1/videos/{video_id} until completed")
        # an animated PNG: every frame exact (the dependencies carry no video encoder)
        return Response(record["_content"], media_type="image/apng")

    @app.delete("/v1/videos/{video_id}")
    async def delete_video(video_id: str):
        with engine.lock:
            record = engine.videos.pop(video_id, None)
        if record is None:
            return error(404, f"no video {video_id}")
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    return app
