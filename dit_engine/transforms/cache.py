"""Cache-stage transforms: ``cache.dbcache`` (presets fbcache, dbcache_fast, dbcache_slow),
``cache.scm`` (a step computation mask on top of the same block-stack cache) and ``cache.dbprune``
(block-by-block decisions)."""

from __future__ import annotations

from typing import Any

from dit_engine.adapter import ModelInfo
from dit_engine.caches.dbcache import HOOK_NAME as DBCACHE_HOOK
from dit_engine.caches.dbcache import DBCacheSettings, install_dbcache, install_output_cache
from dit_engine.caches.dbprune import HOOK_NAME as DBPRUNE_HOOK
from dit_engine.caches.dbprune import DBPruneSettings, install_dbprune
from dit_engine.hooks import remove_hook
from dit_engine.caches.step_mask import PRESET_FRACTIONS, mask_problem, preset_flags, resample
from dit_engine.config.schema import DBCacheConfig, DBPruneConfig, SCMConfig
from dit_engine.plan import PlanContext, Stage
from dit_engine.transforms.base import ApplyContext, Transform


class DBCacheTransform(Transform):
    """Installs DBCache on every transformer of the pipeline (see ``dit_engine.caches.dbcache``)."""

    name = "cache.dbcache"
    stage = Stage.CACHE
    config_class = DBCacheConfig
    #: calibrators (``calibrator=taylorseer``) can forecast this cache's residuals
    calibratable = True
    #: Fn = 0 is allowed only when steps are decided without a front residual (SCM static)
    min_front_blocks = 1
    hook_name = DBCACHE_HOOK

    @classmethod
    def check(cls, config: Any, context: PlanContext) -> list[str]:
        problems = []
        total = context.model_info.total_blocks
        if config.front_blocks < cls.min_front_blocks:
            problems.append(
                f"cache.front_blocks={config.front_blocks}: this cache decides from the front blocks' residual and needs "
                "at least 1; use cache.front_blocks=1 (or cache=scm_static for steps decided without probing)"
            )
        if config.front_blocks < 0 or config.back_blocks < 0:
            problems.append("cache.front_blocks and cache.back_blocks must be 0 or more")
        if config.front_blocks + config.back_blocks >= total:
            problems.append(
                f"cache.front_blocks + cache.back_blocks = {config.front_blocks + config.back_blocks} leaves no middle block to "
                f"cache in this model's {total} blocks; keep their sum below {total}"
            )
        if cls.needs_threshold(config):
            if config.threshold is None:
                problems.append(f"cache.threshold has no default for model '{context.adapter.name}'; set cache.threshold=<value>, e.g. 0.08")
            elif not config.threshold >= 0:  # also catches NaN
                problems.append(f"cache.threshold={config.threshold} must be >= 0 (0 disables caching); try cache.threshold=0.08")
        if not config.threshold_scale > 0:
            problems.append(f"cache.threshold_scale={config.threshold_scale} must be > 0")
        if config.warmup_steps < 0:
            problems.append(f"cache.warmup_steps={config.warmup_steps} is negative; use 0 or more")
        for key in ("max_cached_steps", "max_continuous_cached_steps"):
            if getattr(config, key) < -1:
                problems.append(f"cache.{key}={getattr(config, key)}: use -1 (no limit) or a count >= 0")
        return problems

    @classmethod
    def needs_threshold(cls, config: Any) -> bool:
        return True

    @classmethod
    def describe(cls, config: Any, model_info: ModelInfo) -> str:
        cfg_mode = {None: "per CFG branch", True: "per CFG branch", False: "CFG branches follow branch 0"}[config.separate_cfg]
        return (
            f"DBCache F{config.front_blocks}B{config.back_blocks} over {model_info.total_blocks} blocks, "
            f"threshold={config.threshold}, warmup_steps={config.warmup_steps}, "
            f"max_cached_steps={config.max_cached_steps}, max_continuous_cached_steps={config.max_continuous_cached_steps}, "
            f"decisions {cfg_mode}"
        )

    def settings(self) -> DBCacheSettings:
        c = self.config
        return DBCacheSettings(
            front_blocks=c.front_blocks,
            back_blocks=c.back_blocks,
            threshold=c.threshold if c.threshold is not None else 0.0,
            warmup_steps=c.warmup_steps,
            max_cached_steps=c.max_cached_steps,
            max_continuous_cached_steps=c.max_continuous_cached_steps,
            shared_cfg_decision=c.separate_cfg is False,
        )

    def install(self, name: str, transformer: Any, context: ApplyContext):
        """Hook one transformer; return ``(cache state, hooked blocks)``."""
        return install_dbcache(name, transformer, context.adapter.block_lists(transformer), self.settings(), context.step_state)

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.caches = []
        self.hooked = []
        for name, transformer in context.transformers.items():
            cache, hooked = self.install(name, transformer, context)
            self.caches.append(cache)
            self.hooked.extend(hooked)
        if self.calibratable:
            context.caches.extend(self.caches)

    def remove(self, pipe: Any) -> None:
        for block in self.hooked:
            remove_hook(block, self.hook_name)
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


class SCMTransform(DBCacheTransform):
    """DBCache driven by a steps computation mask (``cache=scm``, ``cache=scm_static``)."""

    name = "cache.scm"
    config_class = SCMConfig
    min_front_blocks = 0

    @classmethod
    def needs_threshold(cls, config: SCMConfig) -> bool:
        return config.policy == "dynamic"

    @classmethod
    def check(cls, config: SCMConfig, context: PlanContext) -> list[str]:
        problems = super().check(config, context)
        if config.policy not in ("static", "dynamic"):
            problems.append(f"cache.policy={config.policy} is unknown; use static (cache every masked step) or dynamic (masked steps obey the threshold)")
        elif config.policy == "dynamic" and config.front_blocks < 1:
            problems.append("cache.policy=dynamic decides from the front blocks' residual: use cache.front_blocks>=1 or cache.policy=static")
        if config.skip_level not in ("blocks", "model"):
            problems.append(f"cache.skip_level={config.skip_level} is unknown; use blocks or model")
        elif config.skip_level == "model" and config.policy != "static":
            problems.append("cache.skip_level=model skips whole steps without a probe: it needs cache.policy=static")
        if config.mask is not None:
            problem = mask_problem(config.mask)
            if problem:
                problems.append(problem)
        elif config.preset not in PRESET_FRACTIONS:
            problems.append(f"cache.preset={config.preset} is unknown; use one of {', '.join(PRESET_FRACTIONS)} or give cache.mask=<bits>")
        return problems

    @classmethod
    def describe(cls, config: SCMConfig, model_info: ModelInfo) -> str:
        source = f"mask {config.mask} (resampled to the step count)" if config.mask else f"preset {config.preset} (~{PRESET_FRACTIONS[config.preset]:.0%} of steps computed)"
        threshold = f", threshold={config.threshold}" if config.policy == "dynamic" else ""
        level = "whole transformer call" if config.skip_level == "model" else f"F{config.front_blocks}B{config.back_blocks} over {model_info.total_blocks} blocks"
        return f"SCM {level}, {source}, policy={config.policy}{threshold}, warmup_steps={config.warmup_steps}"

    def install(self, name: str, transformer: Any, context: ApplyContext):
        if self.config.skip_level == "model":
            return install_output_cache(name, transformer, context.adapter.block_lists(transformer), self.settings(), context.step_state)
        return super().install(name, transformer, context)

    def settings(self) -> DBCacheSettings:
        settings = super().settings()
        c = self.config
        settings.step_mask = (lambda n: resample(c.mask, n)) if c.mask else (lambda n: preset_flags(c.preset, n))
        settings.policy = c.policy
        return settings


class DBPruneTransform(DBCacheTransform):
    """Dynamic block prune (``cache=dbprune``; see ``dit_engine.caches.dbprune``)."""

    name = "cache.dbprune"
    config_class = DBPruneConfig
    calibratable = False  # per-block residuals are reused as they are
    min_front_blocks = 0
    hook_name = DBPRUNE_HOOK

    @classmethod
    def describe(cls, config: DBPruneConfig, model_info: ModelInfo) -> str:
        return (
            f"DBPrune over {model_info.total_blocks} blocks, first {config.front_blocks} and last {config.back_blocks} never "
            f"pruned, threshold={config.threshold} per block, warmup_steps={config.warmup_steps}, "
            f"max_cached_steps={config.max_cached_steps} and max_continuous_cached_steps={config.max_continuous_cached_steps} per block"
        )

    def install(self, name: str, transformer: Any, context: ApplyContext):
        c = self.config
        settings = DBPruneSettings(c.threshold, c.warmup_steps, c.max_cached_steps, c.max_continuous_cached_steps)
        return install_dbprune(name, context.adapter.block_lists(transformer), c.front_blocks, c.back_blocks, settings, context.step_state)
