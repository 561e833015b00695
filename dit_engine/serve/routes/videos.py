"""Videos, OpenAI's video jobs: ``POST /v1/videos`` queues one (video pipelines only),
``GET /v1/videos/{id}`` its status, ``GET /v1/videos/{id}/content`` the finished video (an
animated PNG: every frame exact, the dependencies carry no video encoder), ``DELETE`` forgets it."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from dit_engine.errors import DitEngineError
from dit_engine.serve.responses import error, refused
from dit_engine.serve.routes import Engine
from dit_engine.serve.validation import parse_size

router = APIRouter()


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
    """OpenAI's video object: the record without its private keys (the content)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


@router.post("/v1/videos")
async def create_video(body: VideoRequest, engine: Engine):
    if not engine.makes_video:
        engine.metrics.count("bad_request")
        return error(400, f"model {engine.model_id()} generates images; use POST /v1/images/generations")
    try:
        frames = body.num_frames if body.num_frames is not None else engine.session.workload.call_kwargs.get("num_frames")
        settings = engine.requests.settings(steps=body.num_inference_steps, guidance=body.guidance_scale,
                                            size=parse_size(body.size, engine.serve.max_side),
                                            negative_prompt=body.negative_prompt, num_frames=frames)
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        engine.requests.check(body.prompt, settings, seed=seed)
        record = engine.submit_video(body.prompt, seed, settings, engine.model_id())
    except DitEngineError as err:
        return refused(engine.metrics, err)
    engine.metrics.count("ok")
    return _video_object(record)


@router.get("/v1/videos/{video_id}")
async def video_status(video_id: str, engine: Engine):
    record = engine.videos.get(video_id)
    if record is None:
        return error(404, f"no video {video_id}")
    return _video_object(record)


@router.get("/v1/videos/{video_id}/content")
async def video_content(video_id: str, engine: Engine):
    record = engine.videos.get(video_id)
    if record is None:
        return error(404, f"no video {video_id}")
    if record["status"] != "completed":
        return error(409, f"video {video_id} is {record['status']}; poll GET /v1/videos/{video_id} until completed")
    return Response(record["_content"], media_type="image/apng")


@router.delete("/v1/videos/{video_id}")
async def delete_video(video_id: str, engine: Engine):
    record = engine.videos.pop(video_id)
    if record is None:
        return error(404, f"no video {video_id}")
    return {"id": video_id, "object": "video.deleted", "deleted": True}
