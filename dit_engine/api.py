"""``dit_engine.apply(pipe, *overrides)``: the Python entry point, same overrides as the CLI."""

from __future__ import annotations

from typing import Any

from dit_engine.config.compose import overrides_touch_group
from dit_engine.errors import ConfigError
from dit_engine.handle import Handle
from dit_engine.session import Session


def apply(pipe: Any, *overrides: str, example_call: dict[str, Any] | None = None) -> Handle:
    """Apply the plan composed from ``overrides`` to a loaded diffusers pipeline.

    Example::

        handle = dit_engine.apply(pipe, "cache=dbcache", "cache.threshold=0.1")
        images = pipe(prompt="...").images
        print(handle.summary())
        handle.remove()

    The adapter is found by the pipeline's class (``model=<name>`` forces one). A pipeline no
    adapter claims gets the automatic adapter, which infers the block lists from one traced call
    of two steps: ``example_call`` (the arguments of a working call, e.g. with ``prompt_embeds``)
    or, without it, the workload's first prompt. Raises
    :class:`ConfigError`, :class:`PlanError`, :class:`UnsupportedPipelineError` or
    :class:`AlreadyAppliedError` with a one-line message naming the fix.
    """
    not_strings = [o for o in overrides if not isinstance(o, str)]
    if not_strings:
        bad = not_strings[0]
        hint = "; unpack a list with apply(pipe, *overrides)" if isinstance(bad, (list, tuple)) else ""
        raise ConfigError(f"apply() takes override strings like 'cache=dbcache', got {type(bad).__name__} {bad!r}{hint}")
    session = Session.from_overrides(overrides)
    named = session.cfg.model.adapter if overrides_touch_group(overrides, "model") else None
    return session.prepare(pipe, named, example_call).apply(pipe)
