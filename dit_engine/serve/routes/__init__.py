"""The HTTP API's routers, one per resource: :mod:`~dit_engine.serve.routes.health` (``/health``,
``/metrics``), :mod:`~dit_engine.serve.routes.models`, :mod:`~dit_engine.serve.routes.images`,
:mod:`~dit_engine.serve.routes.loras` and :mod:`~dit_engine.serve.routes.videos`.

Each endpoint gets the app's :class:`~dit_engine.serve.engine.ServingEngine` through the
:data:`Engine` dependency (:func:`dit_engine.serve.app.create_app` sets it). An endpoint's
docstring is its description in ``/openapi.json``, so only endpoints that had one there have one.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from dit_engine.serve.engine import ServingEngine


def current_engine(request: Request) -> ServingEngine:
    """The engine the app serves (``app.state.engine``)."""
    return request.app.state.engine


#: an endpoint parameter annotated ``Engine`` receives the app's engine
Engine = Annotated[ServingEngine, Depends(current_engine)]


async def sync_loras(engine: ServingEngine) -> None:
    """Under ``serve.replicas=N``: load and unload what the other replicas did, so this replica
    holds the service's LoRAs (off the event loop: loading one waits for the running call)."""
    if engine.loras.registry is not None:
        await asyncio.to_thread(engine.loras.sync)
