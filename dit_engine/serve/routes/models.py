"""``GET /v1/models``: the one model the server serves, in OpenAI's list shape."""

from __future__ import annotations

from fastapi import APIRouter

from dit_engine.serve.routes import Engine

router = APIRouter()


@router.get("/v1/models")
async def models(engine: Engine):
    return {"object": "list", "data": [{"id": engine.model_id(), "object": "model", "created": 0,
                                        "owned_by": "dit_engine", "adapter": engine.adapter.name}]}
