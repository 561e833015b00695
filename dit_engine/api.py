"""``dit_engine.apply(pipe, *overrides)``: the Python entry point, same overrides as the CLI."""

from __future__ import annotations

from typing import Any

from dit_engine.config import compose_config
from dit_engine.errors import UnsupportedPipelineError
from dit_engine.handle import Handle
from dit_engine.plan import compile_plan
from dit_engine.registry import Registry

def find_adapter(pipe: Any, registry: Registry, name: str | None = None):
    """The adapter for ``pipe``: the named one (checked to match) or the first installed match."""
    if name is not None:
        adapter = registry.adapter(name)
        if not adapter.matches(pipe):
            raise UnsupportedPipelineError(
                f"adapter '{name}' does not serve {type(pipe).__name__} (it serves {', '.join(adapter.pipeline_classes)}); "
                "drop the model= override to pick the adapter automatically"
            )
        return adapter
    for adapter in registry.adapters():
        if adapter.matches(pipe):
            return adapter
    raise UnsupportedPipelineError(
        f"no installed adapter serves {type(pipe).__name__}; installed adapters: "
        f"{', '.join(a.name for a in registry.adapters())}. Install a package that provides one "
        "(entry-point group dit_engine.adapters) or write your own"
    )


def apply(pipe: Any, *overrides: str) -> Handle:
    """Apply the plan composed from ``overrides`` to a loaded diffusers pipeline.

    Example::

        handle = dit_engine.apply(pipe, "cache=dbcache", "cache.threshold=0.1")
        images = pipe(prompt="...").images
        print(handle.summary())
        handle.remove()

    The adapter is found by the pipeline's class (``model=<name>`` forces one). Raises
    :class:`ConfigError`, :class:`PlanError`, :class:`UnsupportedPipelineError` or
    :class:`AlreadyAppliedError` with a one-line message naming the fix.
    """
    cfg = compose_config(overrides)
    registry = Registry(blocked=cfg.blocked)
    named = cfg.model.adapter if any(o.lstrip("+~").startswith("model") for o in overrides) else None
    adapter = find_adapter(pipe, registry, named)
    plan = compile_plan(cfg, registry, adapter, adapter.model_info_from_pipeline(pipe))
    return Handle(pipe, plan).apply()
