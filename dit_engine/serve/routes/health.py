"""``GET /health`` (answered without the API key) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from dit_engine.serve.routes import Engine

router = APIRouter()


@router.get("/health")
async def health(engine: Engine):
    return engine.health()


@router.get("/metrics")
async def metrics(engine: Engine):
    return PlainTextResponse(await asyncio.to_thread(engine.metrics_text), media_type="text/plain; version=0.0.4")
