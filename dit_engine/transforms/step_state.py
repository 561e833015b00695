"""``adapt.step_state``: the hooks that drive :class:`~dit_engine.steps.StepState`.

Wraps the pipeline scheduler's ``set_timesteps`` and ``step`` (instance attributes, removed
again on ``remove``) and registers a pre-forward hook on every transformer.
"""

from __future__ import annotations

import functools
from typing import Any

from diffusers.hooks import HookRegistry, ModelHook

from dit_engine.adapter import ModelInfo
from dit_engine.hooks import remove_hook
from dit_engine.plan import Stage
from dit_engine.transforms.base import ApplyContext, Transform

HOOK_NAME = "dit_engine.step_state"


class _CallHook(ModelHook):
    def __init__(self, state, transformer_name: str):
        super().__init__()
        self.state = state
        self.transformer_name = transformer_name

    def pre_forward(self, module, *args, **kwargs):
        self.state.begin_call(self.transformer_name)
        return args, kwargs


class StepStateTransform(Transform):
    """Engine-owned request / step / CFG-branch tracking (always in the plan)."""

    name = "adapt.step_state"
    stage = Stage.ADAPT

    @classmethod
    def describe(cls, config: Any, model_info: ModelInfo) -> str:
        return "request at scheduler.set_timesteps, step end at scheduler.step, CFG branch = call index in step"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.state = context.step_state
        self.scheduler = pipe.scheduler
        self.modules = dict(context.transformers)
        state = self.state
        scheduler = self.scheduler

        original_set_timesteps = self.scheduler.set_timesteps
        original_step = self.scheduler.step

        @functools.wraps(original_set_timesteps)
        def set_timesteps(*args, **kwargs):
            result = original_set_timesteps(*args, **kwargs)
            timesteps = getattr(scheduler, "timesteps", None)
            state.start_request(len(timesteps) if timesteps is not None else 0)
            return result

        @functools.wraps(original_step)
        def step(*args, **kwargs):
            result = original_step(*args, **kwargs)
            state.end_step()
            return result

        self.scheduler.set_timesteps = set_timesteps
        self.scheduler.step = step
        for name, module in self.modules.items():
            HookRegistry.check_if_exists_or_initialize(module).register_hook(_CallHook(state, name), HOOK_NAME)

    def remove(self, pipe: Any) -> None:
        for attr in ("set_timesteps", "step"):
            self.scheduler.__dict__.pop(attr, None)
        for module in self.modules.values():
            remove_hook(module, HOOK_NAME)

    def reset_stats(self) -> None:
        self.state.reset_stats()

    def stats(self) -> dict[str, Any]:
        return {"transformer_calls": dict(self.state.calls_total), "requests": self.state.request}
