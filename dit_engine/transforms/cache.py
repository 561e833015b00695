"""Cache-stage transforms: ``cache.dbcache`` (and its F1B0 preset ``cache=fbcache``)."""

from __future__ import annotations

from typing import Any

from dit_engine.adapter import ModelInfo
from dit_engine.caches.dbcache import DBCacheSettings, install_dbcache, uninstall
from dit_engine.config.schema import DBCacheConfig
from dit_engine.plan import PlanContext, Stage
from dit_engine.transforms.base import ApplyContext, Transform


class DBCacheTransform(Transform):
    """Installs DBCache on every transformer of the pipeline (see ``dit_engine.caches.dbcache``)."""

    name = "cache.dbcache"
    stage = Stage.CACHE
    config_class = DBCacheConfig

    @classmethod
    def check(cls, config: DBCacheConfig, context: PlanContext) -> list[str]:
        problems = []
        total = context.model_info.total_blocks
        if config.front_blocks < 1:
            problems.append(f"cache.front_blocks={config.front_blocks}: DBCache needs at least 1 front block to decide; use cache.front_blocks=1 or more")
        if config.back_blocks < 0:
            problems.append(f"cache.back_blocks={config.back_blocks} is negative; use 0 or more")
        if config.front_blocks + config.back_blocks >= total:
            problems.append(
                f"cache.front_blocks + cache.back_blocks = {config.front_blocks + config.back_blocks} leaves no middle block to "
                f"cache in this model's {total} blocks; keep their sum below {total}"
            )
        if config.threshold is None:
            problems.append(f"cache.threshold has no default for model '{context.adapter.name}'; set cache.threshold=<value>, e.g. 0.08")
        elif not config.threshold >= 0:  # also catches NaN
            problems.append(f"cache.threshold={config.threshold} must be >= 0 (0 disables caching); try cache.threshold=0.08")
        for key in ("warmup_steps",):
            if getattr(config, key) < 0:
                problems.append(f"cache.{key}={getattr(config, key)} is negative; use 0 or more")
        for key in ("max_cached_steps", "max_continuous_cached_steps"):
            if getattr(config, key) < -1:
                problems.append(f"cache.{key}={getattr(config, key)}: use -1 (no limit) or a count >= 0")
        return problems

    @classmethod
    def describe(cls, config: DBCacheConfig, model_info: ModelInfo) -> str:
        return (
            f"DBCache F{config.front_blocks}B{config.back_blocks} over {model_info.total_blocks} blocks, "
            f"threshold={config.threshold}, warmup_steps={config.warmup_steps}, "
            f"max_cached_steps={config.max_cached_steps}, max_continuous_cached_steps={config.max_continuous_cached_steps}"
        )

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        c = self.config
        settings = DBCacheSettings(c.front_blocks, c.back_blocks, c.threshold, c.warmup_steps,
                                   c.max_cached_steps, c.max_continuous_cached_steps)
        self.caches = []
        self.hooked = []
        for name, transformer in context.transformers.items():
            cache, hooked = install_dbcache(name, transformer, context.adapter.block_lists(transformer), settings, context.step_state)
            self.caches.append(cache)
            self.hooked.extend(hooked)

    def remove(self, pipe: Any) -> None:
        uninstall(self.hooked)
        self.hooked = []

    def reset_stats(self) -> None:
        for cache in self.caches:
            cache.reset_stats()

    def stats(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"blocks_computed": 0, "blocks_total": 0, "blocks_skipped": 0,
                                  "steps_cached": 0, "steps_total": 0, "block_lists": {}, "branches": {}}
        for cache in self.caches:
            stats = cache.stats()
            for key in ("blocks_computed", "blocks_total", "blocks_skipped", "steps_cached", "steps_total"):
                merged[key] += stats[key]
            merged["block_lists"].update(stats["block_lists"])
            merged["branches"].update(stats["branches"])
        return merged
