"""DBCache (``cache=dbcache``; presets ``fbcache``, ``dbcache_fast``, ``dbcache_slow``): the block
cache with a threshold on the front blocks' residual.

After the first ``front_blocks`` (Fn) run, the relative L1 change of their output residual against
the last *computed* step of this CFG branch is compared with the threshold: below it, the middle
blocks are reused (so slow drift accumulates until it forces a compute). See
``caches/block_cache.py`` for the hook mechanism this rule plugs into.
"""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.adapter import ModelInfo
from dit_engine.caches.block_cache import (BlockCache, BranchState, ForecastableBlockCache, family_threshold,
                                           relative_l1)
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext
from dit_engine.caches.configs import DBCacheConfig  # noqa: F401 - the schema, torch-free (re-exported)


#: ``cache.threshold`` defaults by adapter name, over :data:`LARGE_DIT_DBCACHE_THRESHOLD` (a plain
#: dict: a plugin adds its family's entry when its adapter module is imported).
DBCACHE_THRESHOLDS: dict[str, float] = {
    "tiny": 0.2,  # measured on the embedded digits model at 28 steps (benchmarks/, docs/caches.md)
}
#: What FBCache/DBCache users run the large diffusers DiTs with (ParaAttention, cache-dit: about
#: 1.5-2x at 28-50 steps with little visible change).
LARGE_DIT_DBCACHE_THRESHOLD = 0.08


def threshold_hit(cache: BlockCache, state: BranchState, front_residual: torch.Tensor | None, threshold: float) -> bool:
    """Whether the Fn residual changed less than ``threshold`` since the last computed step."""
    previous = state.front_residual
    return (
        front_residual is not None
        and previous is not None
        and previous.shape == front_residual.shape
        and threshold > 0
        and relative_l1(front_residual, previous, cache.group) < threshold
    )


class ThresholdRule:
    """DBCache's decision: within the cache's limits, hit when the Fn residual barely changed;
    with ``separate_cfg=false`` later CFG branches copy branch 0's decision."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def new_request(self, cache: BlockCache) -> None:
        pass

    def should_hit(self, cache: BlockCache, state: BranchState, step: int, front_residual, entry) -> bool:
        if not cache.may_cache(state, step):
            return False
        if cache.follows_leader():
            return cache.leader_hit(step)
        return threshold_hit(cache, state, front_residual, self.threshold)


class DBCacheTransform(ForecastableBlockCache):
    """Installs DBCache on every transformer of the pipeline."""

    name = "cache.dbcache"
    stage = Stage.CACHE
    config_class = DBCacheConfig

    @classmethod
    def family_defaults(cls, adapter: Any) -> dict[str, Any]:
        """The family's threshold (:data:`DBCACHE_THRESHOLDS`)."""
        return family_threshold(DBCACHE_THRESHOLDS, LARGE_DIT_DBCACHE_THRESHOLD, adapter)

    @classmethod
    def describe(cls, config: DBCacheConfig, model_info: ModelInfo) -> str:
        cfg_mode = {None: "per CFG branch", True: "per CFG branch", False: "CFG branches follow branch 0"}[config.separate_cfg]
        return (
            f"DBCache F{config.front_blocks}B{config.back_blocks} over {model_info.total_blocks} blocks, "
            f"threshold={config.threshold}, warmup_steps={config.warmup_steps}, "
            f"max_cached_steps={config.max_cached_steps}, max_continuous_cached_steps={config.max_continuous_cached_steps}, "
            f"decisions {cfg_mode}"
        )

    def make_rule(self, transformer: str, context: ApplyContext) -> ThresholdRule:
        return ThresholdRule(self.config.threshold if self.config.threshold is not None else 0.0)
