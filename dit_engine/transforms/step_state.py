"""``adapt.step_state``: the hooks that drive :class:`~dit_engine.steps.StepState`.

Wraps the pipeline scheduler's ``set_timesteps`` and ``step`` (instance attributes, removed
again on ``remove``) and registers a forward pre-hook on every transformer. It is a plain torch
pre-hook rather than a diffusers ModelHook on purpose: torch runs it in ``__call__`` before any
forward wrapper, so every call is counted and its CFG branch is known, even the calls that a
model-level cache answers without running the forward.
"""

from __future__ import annotations

import functools
from typing import Any

from dit_engine.adapter import ModelInfo
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, Transform


class StepStateTransform(Transform):
    """Engine-owned request / step / CFG-branch tracking (always in the plan)."""

    name = "adapt.step_state"
    stage = Stage.ADAPT

    @classmethod
    def describe(cls, config: Any, model_info: ModelInfo) -> str:
        return "request at scheduler.set_timesteps, step end at scheduler.step, CFG branch = call index in step"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.state = context.step_state
        self.pipe = pipe
        self.modules = dict(context.transformers)
        self._wrap(pipe.scheduler)
        self.handles = [
            module.register_forward_pre_hook(lambda _module, _args, name=name: self._begin_call(name))
            for name, module in self.modules.items()
        ]

    def _wrap(self, scheduler: Any) -> None:
        """Wrap ``scheduler``'s ``set_timesteps`` and ``step`` (instance attributes)."""
        self.scheduler = scheduler
        state = self.state
        original_set_timesteps = scheduler.set_timesteps
        original_step = scheduler.step

        @functools.wraps(original_set_timesteps)
        def set_timesteps(*args, **kwargs):
            result = original_set_timesteps(*args, **kwargs)
            timesteps = getattr(scheduler, "timesteps", None)
            state.start_request(len(timesteps) if timesteps is not None else 0, noise_levels(scheduler))
            return result

        @functools.wraps(original_step)
        def step(*args, **kwargs):
            state.step_starts()
            result = original_step(*args, **kwargs)
            state.end_step()
            return result

        scheduler.set_timesteps = set_timesteps
        scheduler.step = step

    def _unwrap(self) -> None:
        for attr in ("set_timesteps", "step"):
            self.scheduler.__dict__.pop(attr, None)

    def _begin_call(self, name: str) -> None:
        scheduler = getattr(self.pipe, "scheduler", None)
        if scheduler is not None and scheduler is not self.scheduler:
            # pipe.scheduler was replaced after apply: follow it, and start the request its
            # set_timesteps (already run, unwrapped) began, so caching keeps working.
            self._unwrap()
            self._wrap(scheduler)
            timesteps = getattr(scheduler, "timesteps", None)
            self.state.start_request(len(timesteps) if timesteps is not None else 0, noise_levels(scheduler))
        self.state.begin_call(name)

    def remove(self, pipe: Any) -> None:
        self._unwrap()
        for handle in self.handles:
            handle.remove()

    def reset_stats(self) -> None:
        self.state.reset_stats()

    def stats(self) -> dict[str, Any]:
        return {"transformer_calls": dict(self.state.calls_total), "requests": self.state.request}


def noise_levels(scheduler: Any) -> list[float] | None:
    """Each step's noise level in [0, 1]: the scheduler's ``sigmas`` (flow matching: the share of
    noise in the sample), else ``timesteps / num_train_timesteps``; None when neither is known."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None:
        return None
    count = len(timesteps)
    sigmas = getattr(scheduler, "sigmas", None)
    try:
        if sigmas is not None and len(sigmas) >= count and float(max(sigmas[:count])) <= 1.0:
            return [float(s) for s in sigmas[:count]]
        train = getattr(getattr(scheduler, "config", None), "num_train_timesteps", None) or 1000
        return [min(1.0, max(0.0, float(t) / train)) for t in timesteps]
    except (TypeError, ValueError):
        return None
