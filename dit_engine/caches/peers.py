"""Peer caches as transforms, so they run in the same plans, sweeps and reports as ours.

They apply the peers' own code (diffusers' cache hooks via ``transformer.enable_cache``, cache-dit's
``enable_cache``) and count the block forwards that really run, so their compute fraction is
measured the same way as for dit_engine's caches.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from dit_engine.adapter import Adapter, ModelInfo
from dit_engine.caches.magcache import MagCacheTransform
from dit_engine.caches.seacache import SeaCacheTransform
from dit_engine.errors import PlanError
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, Lifecycle, PlanContext, Transform
from dit_engine.caches.configs import DiffusersFBCConfig, DiffusersTaylorSeerConfig, DiffusersMagCacheConfig, DiffusersSeaCacheConfig, CacheDiTDBCacheConfig  # noqa: F401 - the schema, torch-free (re-exported)


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


class PeerCacheTransform(Transform):
    """Base of the peers: install the peer's cache, count the block forwards that really run."""

    stage = Stage.CACHE
    #: Third-party caches decide on each rank's own shard: refused under parallel plans.
    lifecycle = Lifecycle(rank_consistent=False)

    def enable(self, pipe: Any, transformer: torch.nn.Module, context: ApplyContext) -> None:
        raise NotImplementedError

    def disable(self, pipe: Any, transformer: torch.nn.Module) -> None:
        raise NotImplementedError

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.transformers = dict(context.transformers)
        self.step_state = context.step_state
        self.counters = {}
        for name, transformer in self.transformers.items():
            self.enable(pipe, transformer, context)
            lists = {spec.path: list(blocks) for spec, blocks in context.adapter.block_lists(transformer)}
            self.counters[name] = BlockCounter(lists)

    def remove(self, pipe: Any) -> None:
        for name, transformer in self.transformers.items():
            self.disable(pipe, transformer)
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


class DiffusersCacheTransform(PeerCacheTransform):
    """Base of the diffusers peers: ``transformer.enable_cache(config)``."""

    def diffusers_config(self):
        raise NotImplementedError

    def enable(self, pipe: Any, transformer: torch.nn.Module, context: ApplyContext) -> None:
        transformer.enable_cache(self.diffusers_config())

    def disable(self, pipe: Any, transformer: torch.nn.Module) -> None:
        transformer.disable_cache()


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


class DiffusersMagCacheTransform(DiffusersCacheTransform):
    """``cache=diffusers_magcache``: diffusers' MagCache with the adapter's magnitude-ratio curve."""

    name = "cache.diffusers_magcache"
    config_class = DiffusersMagCacheConfig

    @classmethod
    def family_defaults(cls, adapter: Adapter) -> dict[str, Any]:
        """The family's ratio curve, the one ``cache=magcache`` takes (its threshold is diffusers')."""
        ratios = MagCacheTransform.published_values(adapter)
        return {} if ratios is None else {"mag_ratios": ratios}

    @classmethod
    def check(cls, config: DiffusersMagCacheConfig, context: PlanContext) -> list[str]:
        problems = []
        if config.mag_ratios is None:
            problems.append(f"cache=diffusers_magcache needs a magnitude-ratio curve and adapter '{context.adapter.name}' has none; "
                            "set cache.mag_ratios=[...] or use a model that ships one")
        if config.num_inference_steps is not None and config.num_inference_steps < 1:
            problems.append(f"cache.num_inference_steps={config.num_inference_steps}: use the step count you run with")
        return problems

    @classmethod
    def describe(cls, config: DiffusersMagCacheConfig, model_info: ModelInfo) -> str:
        return (
            f"peer: diffusers MagCache, threshold={config.threshold}, max_skip_steps={config.max_skip_steps}, "
            f"retention_ratio={config.retention_ratio}, {config.num_inference_steps} steps"
        )

    def diffusers_config(self):
        from diffusers.hooks import MagCacheConfig

        if self.config.num_inference_steps is None:
            raise PlanError(["cache=diffusers_magcache needs the step count up front: add cache.num_inference_steps=<the "
                             "num_inference_steps you call the pipeline with>"])
        c = self.config
        return MagCacheConfig(threshold=c.threshold, max_skip_steps=c.max_skip_steps, retention_ratio=c.retention_ratio,
                              num_inference_steps=c.num_inference_steps, mag_ratios=c.mag_ratios)


class DiffusersSeaCacheTransform(DiffusersCacheTransform):
    """``cache=diffusers_seacache``: diffusers' SeaCache (fail-open without step metadata in the
    pipeline's ``cache_context``; the block counter shows what really ran)."""

    name = "cache.diffusers_seacache"
    config_class = DiffusersSeaCacheConfig

    @classmethod
    def check(cls, config: DiffusersSeaCacheConfig, context: PlanContext) -> list[str]:
        # the same settings and limits as cache=seacache (diffusers would raise on them at apply)
        return SeaCacheTransform.check(SeaCacheTransform.config_class(**vars(config) | {"name": "seacache"}), context)

    @classmethod
    def describe(cls, config: DiffusersSeaCacheConfig, model_info: ModelInfo) -> str:
        return (
            f"peer: diffusers SeaCache, threshold={config.threshold}, residual_order={config.residual_order}, "
            f"retention_steps={config.retention_steps}, cache_end_steps={config.cache_end_steps}, "
            f"max_consecutive_cached={config.max_consecutive_cached} (fail-open unless the pipeline's cache_context "
            "passes step_index, sigma and num_inference_steps)"
        )

    def diffusers_config(self):
        from diffusers.hooks import SeaCacheConfig

        c = self.config
        return SeaCacheConfig(threshold=c.threshold, residual_order=c.residual_order, retention_steps=c.retention_steps,
                              cache_end_steps=c.cache_end_steps, max_consecutive_cached=c.max_consecutive_cached,
                              power_exp=c.power_exp)


#: Our block patterns -> cache-dit's ForwardPattern names.
CACHEDIT_PATTERNS = {("encoder", "hidden"): "Pattern_1", ("hidden", "encoder"): "Pattern_0", ("hidden",): "Pattern_2"}


class CacheDiTDBCacheTransform(PeerCacheTransform):
    """``cache=cachedit_dbcache``: cache-dit's own DBCache, wired through its ``BlockAdapter``.

    cache-dit is not a dependency: install it beside torch and diffusers with
    ``pip install --no-deps cache-dit`` (1.5.3 works with torch 2.13 / diffusers 0.42.1).
    """

    name = "cache.cachedit_dbcache"
    config_class = CacheDiTDBCacheConfig

    @classmethod
    def check(cls, config: CacheDiTDBCacheConfig, context: PlanContext) -> list[str]:
        problems = []
        if importlib.util.find_spec("cache_dit") is None:
            problems.append("cache=cachedit_dbcache needs cache-dit: pip install --no-deps cache-dit (it must not replace torch or diffusers)")
        if len(context.adapter.transformer_attrs) != 1:
            problems.append("cache=cachedit_dbcache is wired for one transformer per pipeline")
        if config.front_blocks < 1 or config.front_blocks + config.back_blocks >= context.model_info.total_blocks:
            problems.append(f"cache.front_blocks >= 1 and front + back below {context.model_info.total_blocks} blocks")
        return problems

    @classmethod
    def describe(cls, config: CacheDiTDBCacheConfig, model_info: ModelInfo) -> str:
        return f"peer: cache-dit DBCache F{config.front_blocks}B{config.back_blocks}, threshold={config.threshold}, warmup {config.warmup_steps}"

    def enable(self, pipe: Any, transformer: torch.nn.Module, context: ApplyContext) -> None:
        import cache_dit
        from cache_dit import BlockAdapter, DBCacheConfig, ForwardPattern

        # cache-dit's disable_cache re-registers the block lists, which moves them to the end of the
        # transformer's children; keep the original children to put back (see disable).
        self.children = dict(transformer._modules)

        lists = context.adapter.block_lists(transformer)
        c = self.config
        adapter = BlockAdapter(
            pipe=pipe,
            transformer=transformer,
            blocks=[blocks for _, blocks in lists],
            forward_pattern=[getattr(ForwardPattern, CACHEDIT_PATTERNS[spec.pattern.returns]) for spec, _ in lists],
            has_separate_cfg=c.separate_cfg,
        )
        cache_dit.enable_cache(adapter, cache_config=DBCacheConfig(
            Fn_compute_blocks=c.front_blocks,
            Bn_compute_blocks=c.back_blocks,
            residual_diff_threshold=c.threshold,
            max_warmup_steps=c.warmup_steps,
            max_cached_steps=c.max_cached_steps,
            max_continuous_cached_steps=c.max_continuous_cached_steps,
        ))

    def disable(self, pipe: Any, transformer: torch.nn.Module) -> None:
        import cache_dit

        cache_dit.disable_cache(pipe)
        # Same child objects in the same order: other code (diffusers' FirstBlockCache picks the
        # first block list it meets) must find the transformer exactly as it was.
        transformer._modules.clear()
        transformer._modules.update(self.children)
