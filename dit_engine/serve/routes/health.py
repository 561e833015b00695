"""``GET /health`` (answered without the API key) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from dit_engine.serve.routes import Engine

router = APIRouter()


@router.get("/health")
async def health(engine: Engine):
    return {"status": "ok", "model": engine.model_id(), "queue_depth": engine.queue.depth(), "batching": engine.batching,
            "ranks": engine.ranks}


@router.get("/metrics")
async def metrics(engine: Engine):
    return PlainTextResponse(engine.metrics.prometheus(engine.queue.depth()), media_type="text/plain; version=0.0.4")
