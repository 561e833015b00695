"""Peer caches as transforms, so they run in the same plans, sweeps and reports as ours.

They apply diffusers' own cache hooks (``transformer.enable_cache``) and count the block forwards
that really run, so their compute fraction is measured the same way as for dit_engine's caches.
"""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.adapter import ModelInfo
from dit_engine.config.schema import DiffusersFBCConfig, DiffusersTaylorSeerConfig
from dit_engine.plan import PlanContext, Stage
from dit_engine.transforms.base import ApplyContext, Transform


class BlockCounter:
    """Counts block forwards that really run: a pre-hook on each block's first child module.

    Caches that skip a block never call its children, so the count is exact whatever the cache's
    own hook mechanism is.
    """

    def __init__(self, blocks: dict[str, list[torch.nn.Module]]):
        self.totals = {path: len(modules) for path, modules in blocks.items()}
        self.handles = []
        self.reset()
        for path, modules in blocks.items():
            for block in modules:
                first_child = next(block.children())
                self.handles.append(first_child.register_forward_pre_hook(self._counter(path)))

    def _counter(self, path: str):
        def count(module, args):
            self.computed[path] += 1

        return count

    def reset(self) -> None:
        self.computed = {path: 0 for path in self.totals}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class DiffusersCacheTransform(Transform):
    """Base of the diffusers peers: ``enable_cache(config)`` on every transformer."""

    stage = Stage.CACHE
    calibratable = False

    def diffusers_config(self):
        raise NotImplementedError

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.transformers = dict(context.transformers)
        self.step_state = context.step_state
        self.counters = {}
        for name, transformer in self.transformers.items():
            transformer.enable_cache(self.diffusers_config())
            lists = {spec.path: list(blocks) for spec, blocks in context.adapter.block_lists(transformer)}
            self.counters[name] = BlockCounter(lists)

    def remove(self, pipe: Any) -> None:
        for name, transformer in self.transformers.items():
            transformer.disable_cache()
            self.counters[name].remove()

    def reset_stats(self) -> None:
        for counter in self.counters.values():
            counter.reset()

    def stats(self) -> dict[str, Any]:
        block_lists = {}
        computed = total = 0
        for name, counter in self.counters.items():
            calls = self.step_state.calls_total.get(name, 0)
            for path, size in counter.totals.items():
                block_lists[f"{name}.{path}"] = {"computed": counter.computed[path], "total": calls * size}
                computed += counter.computed[path]
                total += calls * size
        return {"blocks_computed": computed, "blocks_total": total, "blocks_skipped": total - computed, "block_lists": block_lists}


class DiffusersFBCTransform(DiffusersCacheTransform):
    """``cache=diffusers_fbc``: diffusers' FirstBlockCache (needs a pipeline that opens cache contexts)."""

    name = "cache.diffusers_fbc"
    config_class = DiffusersFBCConfig

    @classmethod
    def check(cls, config: DiffusersFBCConfig, context: PlanContext) -> list[str]:
        return [] if config.threshold >= 0 else [f"cache.threshold={config.threshold} must be >= 0"]

    @classmethod
    def describe(cls, config: DiffusersFBCConfig, model_info: ModelInfo) -> str:
        return f"peer: diffusers FirstBlockCache, threshold={config.threshold}"

    def diffusers_config(self):
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=self.config.threshold)


class DiffusersTaylorSeerTransform(DiffusersCacheTransform):
    """``cache=diffusers_taylorseer``: diffusers' TaylorSeerCache (lite mode by default)."""

    name = "cache.diffusers_taylorseer"
    config_class = DiffusersTaylorSeerConfig

    @classmethod
    def check(cls, config: DiffusersTaylorSeerConfig, context: PlanContext) -> list[str]:
        problems = []
        if config.cache_interval < 1:
            problems.append(f"cache.cache_interval={config.cache_interval}: use 1 or more")
        if not 1 <= config.max_order <= 3:
            problems.append(f"cache.max_order={config.max_order}: use 1, 2 or 3")
        return problems

    @classmethod
    def describe(cls, config: DiffusersTaylorSeerConfig, model_info: ModelInfo) -> str:
        return (
            f"peer: diffusers TaylorSeerCache, interval={config.cache_interval}, order={config.max_order}, "
            f"first {config.disable_cache_before_step} steps computed, lite={config.use_lite_mode}"
        )

    def diffusers_config(self):
        from diffusers.hooks import TaylorSeerCacheConfig

        c = self.config
        return TaylorSeerCacheConfig(
            cache_interval=c.cache_interval,
            disable_cache_before_step=c.disable_cache_before_step,
            max_order=c.max_order,
            use_lite_mode=c.use_lite_mode,
            taylor_factors_dtype=torch.float32,
        )
