"""``dit_engine.apply(pipe, *overrides)``: the Python entry point, same overrides as the CLI."""

from __future__ import annotations

from typing import Any

from dit_engine.config.compose import overrides_touch_group
from dit_engine.early_checks import early_problems
from dit_engine.errors import AlreadyAppliedError, ConfigError, PlanError
from dit_engine.first_call import FirstCallHandle, waiting_for_first_call
from dit_engine.handle import Handle
from dit_engine.session import Session
from dit_engine.transforms.protocols import TracedAdapter


def apply(pipe: Any, *overrides: str, example_call: dict[str, Any] | None = None) -> Handle:
    """Apply the plan composed from ``overrides`` to a loaded diffusers pipeline.

    Example::

        handle = dit_engine.apply(pipe, "cache=dbcache", "cache.threshold=0.1")
        images = pipe(prompt="...").images
        print(handle.summary())
        handle.remove()

    The adapter is found by the pipeline's class (``model=<name>`` forces one). A pipeline no
    adapter claims (or ``model=auto``) gets the automatic adapter, which infers the block lists
    from one traced call of two steps: ``example_call`` (the arguments of a working call, e.g.
    with ``prompt_embeds``) or, without it, the pipeline's first real call: the plan is then
    completed and applied when the pipeline is first called, and that call runs with it (the
    returned :class:`~dit_engine.first_call.FirstCallHandle` becomes the plan's handle). Raises
    :class:`ConfigError`, :class:`PlanError`, :class:`UnsupportedPipelineError` or
    :class:`AlreadyAppliedError` with a one-line message naming the fix.
    """
    not_strings = [o for o in overrides if not isinstance(o, str)]
    if not_strings:
        bad = not_strings[0]
        hint = "; unpack a list with apply(pipe, *overrides)" if isinstance(bad, (list, tuple)) else ""
        raise ConfigError(f"apply() takes override strings like 'cache=dbcache', got {type(bad).__name__} {bad!r}{hint}")
    if waiting_for_first_call(pipe):
        raise AlreadyAppliedError("this pipeline already has a dit_engine plan that its next call completes (model=auto); "
                                  "call the pipeline once, or handle.remove(), before applying another")
    session = Session.from_overrides(overrides)
    named = session.cfg.model.adapter if overrides_touch_group(overrides, "model") else None
    if example_call is None and isinstance(session.registry.adapter_for_pipeline(pipe, named), TracedAdapter):
        problems = early_problems(session.cfg, session.registry, loads_model=False)  # now, not at the first call
        if problems:
            raise PlanError(problems)
        return FirstCallHandle(pipe, lambda call: session.prepare(pipe, named, call).apply(pipe))
    return session.prepare(pipe, named, example_call).apply(pipe)
