"""The handle of a plan applied to a live pipeline: summary, reset, remove."""

from __future__ import annotations

from typing import Any

from dit_engine.errors import AlreadyAppliedError, IrreversiblePlanError
from dit_engine.hooks import invalidate_registry_caches
from dit_engine.plan import Plan
from dit_engine.steps import StepState
from dit_engine.transforms.base import ApplyContext
from dit_engine.transforms.protocols import WrapsInner, WrapsOuter

HANDLE_ATTR = "_dit_engine_handle"


class Handle:
    """A plan applied to one pipeline. Returned by :func:`dit_engine.apply`.

    ``summary()`` reports what the transforms did since apply or the last ``reset()``;
    ``remove()`` undoes every transform in reverse order, leaving the pipeline as it was.
    """

    def __init__(self, pipe: Any, plan: Plan):
        self.pipe = pipe
        self.plan = plan
        self.step_state = StepState()
        self.transforms: list = []
        self.applied = False

    def apply(self) -> "Handle":
        """Apply every plan step in stage order; on failure undo what was applied and re-raise."""
        if getattr(self.pipe, HANDLE_ATTR, None) is not None:
            raise AlreadyAppliedError(
                "this pipeline already has a dit_engine plan applied; call handle.remove() first, then apply again"
            )
        adapter = self.plan.adapter
        for name, transformer in adapter.transformers(self.pipe).items():
            if getattr(transformer, "is_cache_enabled", False):
                raise AlreadyAppliedError(
                    f"pipe.{name} already has diffusers' own cache enabled, which dit_engine's hooks would run under; "
                    f"call pipe.{name}.disable_cache() first (diffusers' caches also run as cache=diffusers_fbc and the like)"
                )
        context = ApplyContext(
            adapter=adapter,
            model_info=self.plan.model_info,
            transformers=adapter.transformers(self.pipe),
            step_state=self.step_state,
            dims=self.plan.dims,
            applied=self.transforms,
        )
        try:
            pending = [step.new_transform() for step in self.plan.steps]
            for transform in pending:  # beneath every hook (regional compile)
                if isinstance(transform, WrapsInner):
                    transform.apply_inner(self.pipe, context)
            for transform in pending:
                transform.apply(self.pipe, context)
                self.transforms.append(transform)
            for transform in self.transforms:  # around every hook (CFG parallel)
                if isinstance(transform, WrapsOuter):
                    transform.apply_outer(self.pipe, context)
        except BaseException:
            self._undo()
            raise
        finally:
            self._refresh_registries()
        setattr(self.pipe, HANDLE_ATTR, self)
        self.applied = True
        return self

    def _undo(self) -> None:
        while self.transforms:
            self.transforms.pop().remove(self.pipe)
        self._refresh_registries()

    def _refresh_registries(self) -> None:
        for transformer in self.plan.adapter.transformers(self.pipe).values():
            invalidate_registry_caches(transformer)

    def remove(self) -> None:
        """Undo every transform (reverse order). Safe to call twice.

        Raises :class:`IrreversiblePlanError` before removing anything when a step cannot be
        undone (quantized weights, sharded or compiled modules): reload the pipeline instead.
        """
        if not self.applied:
            return
        irreversible = self.plan.irreversible_steps()
        if irreversible:
            names = ", ".join(step.name for step in irreversible)
            raise IrreversiblePlanError(
                f"this plan cannot be removed: {names} changed the pipeline irreversibly; load the pipeline again instead"
            )
        self._undo()
        if getattr(self.pipe, HANDLE_ATTR, None) is self:
            delattr(self.pipe, HANDLE_ATTR)
        self.applied = False

    def reset(self) -> None:
        """Zero every counter; the next ``summary()`` covers only what runs after this."""
        for transform in self.transforms:
            transform.reset_stats()

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable account of the work done since apply or the last reset.

        Keys: ``blocks_computed`` / ``blocks_total`` (block forwards run vs. what an uncached run
        makes), ``compute_fraction``, ``steps_cached`` / ``steps_total`` (one step = one
        transformer call, i.e. one CFG branch of one denoising step), ``hit_ratio``,
        ``transformer_calls``, and ``transforms`` with each transform's own counters (per block
        list and CFG branch, with the per-step compute mask: 1 computed, 0 cached).
        """
        per_transform = {step.name: t.stats() for step, t in zip(self.plan.steps, self.transforms)}
        calls = dict(self.step_state.calls_total)
        steps_total = sum(calls.values())
        blocks_total = steps_total * self.plan.model_info.total_blocks
        skipped = sum(stats.get("blocks_skipped", 0) for stats in per_transform.values())
        steps_cached = sum(stats.get("steps_cached", 0) for stats in per_transform.values())
        computed = blocks_total - skipped
        return {
            "blocks_computed": computed,
            "blocks_total": blocks_total,
            "compute_fraction": computed / blocks_total if blocks_total else 1.0,
            "steps_cached": steps_cached,
            "steps_total": steps_total,
            "hit_ratio": steps_cached / steps_total if steps_total else 0.0,
            "transformer_calls": calls,
            "transforms": per_transform,
        }
