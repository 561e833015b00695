"""The HTTP API (FastAPI): the OpenAI Images API shape over a :class:`ServingEngine`.

* ``POST /v1/images/generations``: ``prompt``, ``n``, ``size`` (``"WxH"``), ``response_format``
  (``b64_json``, the default, or ``url``), plus ``num_inference_steps``, ``guidance_scale``,
  ``seed``, ``negative_prompt``; each image also carries what the engine measured
  (``dit_engine``: latency, compute fraction, cache hits).
* ``GET /v1/images/{id}.png`` (``response_format=url``), ``GET /health``, ``GET /v1/models``,
  ``GET /metrics`` (Prometheus text).

Every error is JSON in OpenAI's shape, ``{"error": {"message": "<one line>", "type": ...}}``:
400 for a request the model cannot serve, 401 without the API key, 413 for a body over
``serve.max_body_mb``, 422 for a malformed body or unknown fields, 429 (with ``Retry-After``) when
the queue is full, 500 when generation failed; the server keeps serving after each.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import time
import uuid
from typing import Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from dit_engine.serve.engine import BadRequestError, QueueFullError, ServingEngine


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

    prompt: str = Field(min_length=1, max_length=4000)
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

    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = None
    size: str | None = None
    num_frames: int | None = Field(default=None, ge=1, le=1024)
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


def _size(size: str | None) -> tuple[int, int] | None:
    if size is None or size == "auto":
        return None
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) <= 16384 for p in parts):
        raise BadRequestError(f"size={size!r}: give it as WIDTHxHEIGHT, e.g. 1024x1024")
    return int(parts[0]), int(parts[1])


def _lora(choice: str | LoraChoice | None) -> tuple[str, float] | None:
    if choice is None:
        return None
    return (choice, 1.0) if isinstance(choice, str) else (choice.name, choice.scale)


def create_app(engine: ServingEngine) -> FastAPI:
    """The FastAPI application serving ``engine``."""
    serve = engine.serve
    app = FastAPI(title="dit_engine", version="1", docs_url=None, redoc_url=None)
    max_body = int(serve.max_body_mb * 1024 * 1024)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if serve.api_key and request.url.path != "/health":
            token = request.headers.get("authorization", "")
            if not secrets.compare_digest(token.encode(), f"Bearer {serve.api_key}".encode()):
                return error(401, "missing or wrong API key: send Authorization: Bearer <serve.api_key>", "authentication_error")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            return error(413, f"the body is {int(length)} bytes; the limit is serve.max_body_mb={serve.max_body_mb:g} MB")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error(422, _one_line(exc.errors()))

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

    async def _generate(body: ImageGenerationRequest, request: Request, inputs: dict | None = None):
        started = time.perf_counter()
        try:
            if not 1 <= body.n <= serve.max_images:
                raise BadRequestError(f"n={body.n}: ask for 1 to {serve.max_images} images (serve.max_images)")
            settings = engine.settings(steps=body.num_inference_steps, guidance=body.guidance_scale,
                                       size=_size(body.size), negative_prompt=body.negative_prompt, lora=_lora(body.lora))
            engine.check(body.prompt, settings)
            seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
            future = engine.submit(body.prompt, body.n, seed, settings, inputs=inputs)
        except BadRequestError as err:
            engine.count("bad_request")
            return error(400, str(err))
        except QueueFullError as err:
            return error(429, str(err), "rate_limit_error", headers={"Retry-After": "1"})
        try:
            images, stats = await asyncio.wrap_future(future)
        except BadRequestError as err:
            engine.count("bad_request")
            return error(400, str(err))
        except Exception as err:
            engine.count("error")
            return error(500, str(err).splitlines()[0] if str(err) else type(err).__name__, "server_error")
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
    async def edits(request: Request, image: UploadFile = File(...), prompt: str = Form(..., min_length=1, max_length=4000),
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
        try:
            await asyncio.to_thread(engine.load_lora, body.name, body.path)
        except BadRequestError as err:
            return error(400, str(err))
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
            settings = engine.settings(steps=body.num_inference_steps, guidance=body.guidance_scale, size=_size(body.size),
                                       negative_prompt=body.negative_prompt,
                                       num_frames=body.num_frames or engine.session.workload.call_kwargs.get("num_frames"))
            engine.check(body.prompt, settings)
            seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
            record = engine.submit_video(body.prompt, seed, settings, engine.model_id())
        except BadRequestError as err:
            engine.count("bad_request")
            return error(400, str(err))
        except QueueFullError as err:
            return error(429, str(err), "rate_limit_error", headers={"Retry-After": "1"})
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
