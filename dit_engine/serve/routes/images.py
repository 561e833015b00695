"""Images: ``POST /v1/images/generations`` (OpenAI's fields and the engine's own), ``POST
/v1/images/edits`` (multipart, for edit pipelines) and ``GET /v1/images/{id}.png``
(``response_format=url``). Each image carries what the engine measured (``dit_engine``: latency,
compute fraction, cache hits) and its seed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import secrets
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from dit_engine.errors import DitEngineError
from dit_engine.serve.batching import ImageJob
from dit_engine.serve.engine import ServingEngine
from dit_engine.serve.errors import RequestCancelledError
from dit_engine.serve.responses import error, refused
from dit_engine.serve.routes import Engine, sync_loras
from dit_engine.serve.validation import parse_size

router = APIRouter()


class LoraChoice(BaseModel):
    """A loaded LoRA adapter and its strength, for one request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    scale: float = 1.0


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations`` (OpenAI's fields and the engine's own)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)  # at most serve.max_prompt_chars (RequestValidator.check_limits)
    model: str | None = None
    n: int = 1
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    lora: str | LoraChoice | list[str | LoraChoice] | None = None
    user: str | None = None


@router.get("/v1/images/{image_id}.png")
async def image(image_id: str, engine: Engine):
    png = engine.images.get(image_id)
    if png is None:
        return error(404, f"no image {image_id} (images are kept for the last serve.keep_images={engine.serve.keep_images})")
    return Response(png, media_type="image/png")


@router.post("/v1/images/generations")
async def generations(body: ImageGenerationRequest, request: Request, engine: Engine):
    return await _generate(engine, body, request)


@router.post("/v1/images/edits")
async def edits(request: Request, engine: Engine, image: UploadFile = File(...), prompt: str = Form(..., min_length=1),
                n: int = Form(1), size: str | None = Form(None), response_format: str = Form("b64_json"),
                model: str | None = Form(None), num_inference_steps: int | None = Form(None),
                guidance_scale: float | None = Form(None), seed: int | None = Form(None),
                negative_prompt: str | None = Form(None), mask: UploadFile | None = File(None)):
    """OpenAI's image edit (multipart): ``image`` (and ``mask`` where the pipeline takes one)
    and ``prompt``, for edit pipelines (FLUX Kontext, Qwen-Image-Edit...)."""
    if not engine.takes("image"):
        engine.metrics.count("bad_request")
        return error(400, f"model {engine.model_id()} does not edit images (its pipeline takes no image); use /v1/images/generations")
    if response_format not in ("b64_json", "url"):
        return error(422, f"response_format={response_format!r}: use b64_json or url")
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
    return await _generate(engine, body, request, inputs)


def _lora(choice: str | LoraChoice | list[str | LoraChoice] | None) -> tuple[tuple[str, float], ...] | None:
    """A request's ``lora`` as ``(name, scale)`` pairs: a name (scale 1), ``{"name", "scale"}``, or
    a list of either, combined; None when the request names none (the server's default applies)."""
    if choice is None:
        return None
    choices = choice if isinstance(choice, list) else [choice]
    return tuple((c, 1.0) if isinstance(c, str) else (c.name, c.scale) for c in choices)


async def _generate(engine: ServingEngine, body: ImageGenerationRequest, request: Request, inputs: dict | None = None):
    """Check, queue and await one request; its images as OpenAI's answer, or the error answer."""
    started = time.perf_counter()
    await sync_loras(engine)
    try:
        settings = engine.requests.settings(steps=body.num_inference_steps, guidance=body.guidance_scale,
                                            size=parse_size(body.size, engine.serve.max_side),
                                            negative_prompt=body.negative_prompt, lora=_lora(body.lora))
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        engine.requests.check(body.prompt, settings, body.n, seed)
        job = engine.submit(body.prompt, body.n, seed, settings, inputs=inputs)
        images, stats = await _result(engine, job, request)
    except (DitEngineError, RuntimeError) as err:  # the worker's failures are RuntimeErrors (NonFiniteOutputError too)
        return refused(engine.metrics, err)
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
            engine.images.add(image_id, png)
            item["url"] = str(request.base_url) + f"v1/images/{image_id}.png"
        data.append(item)
    engine.metrics.count("ok")
    engine.metrics.observe(time.perf_counter() - started)
    return {"created": int(time.time()), "data": data}


async def _result(engine: ServingEngine, job: ImageJob, request: Request) -> Any:
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
            reason = engine.queue.unwanted(job)
            if reason is None and await request.is_disconnected():
                reason = RequestCancelledError("the client went away")
            if reason is not None:
                job.cancel()
                raise reason
    return job.future.result()
