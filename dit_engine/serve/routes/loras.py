"""LoRA adapters: ``GET /v1/loras`` (list), ``POST /v1/loras`` (load one from inside
``serve.lora_dirs``) and ``DELETE /v1/loras/{name}`` (unload: the model computes exactly as before).
Requests then pick one with ``"lora": "<name>"`` or ``{"name": ..., "scale": ...}``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from dit_engine.serve.errors import BadRequestError, LimitError
from dit_engine.serve.responses import error, refused
from dit_engine.serve.routes import Engine, sync_loras

router = APIRouter()


class LoraLoad(BaseModel):
    """``POST /v1/loras``: load the LoRA at ``path`` (a local ``.safetensors`` file or a folder) as ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(min_length=1)


@router.get("/v1/loras")
async def loras(engine: Engine):
    await sync_loras(engine)
    return {"object": "list", "data": [{"name": n, "path": p} for n, p in engine.loras.paths.items()]}


@router.post("/v1/loras")
async def load_lora(body: LoraLoad, engine: Engine):
    """Load a LoRA from inside ``serve.lora_dirs``: 400 with one message for every path it may
    not load (no hint whether a file exists outside them), 422 for non-finite weights."""
    try:
        await asyncio.to_thread(engine.loras.load, body.name, body.path)
    except (BadRequestError, LimitError) as err:
        return refused(engine.metrics, err)
    return {"name": body.name, "path": body.path, "loaded": True}


@router.delete("/v1/loras/{name}")
async def unload_lora(name: str, engine: Engine):
    if not await asyncio.to_thread(engine.loras.unload, name):
        return error(404, f"no LoRA named {name!r} is loaded ({', '.join(engine.loras.paths) or 'none'})")
    return {"name": name, "deleted": True}
