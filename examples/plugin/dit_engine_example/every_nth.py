"""``cache=every_nth``: the block cache recomputes its middle blocks every ``interval`` steps and
reuses them in between (a fixed schedule, no probe: FORA-style reuse).

A whole cache technique in one module: its config dataclass (registered as the Hydra schema
``schema_every_nth`` through the transform's entry point), its decision rule, and its transform.
It plugs into dit_engine's block cache, so calibrators (``calibrator=taylorseer``) bind to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dit_engine.caches.block_cache import BlockCache, BlockCacheConfig, BranchState, ForecastableBlockCache
from dit_engine.plan import Stage


@dataclass
class EveryNthConfig(BlockCacheConfig):
    """``cache=every_nth``: compute every ``interval``-th step, reuse the middle blocks otherwise.

    Attributes:
        name: transform implementation (``every_nth``).
        interval: steps between computes after the warm-up; 1 computes every step (exact).
    """

    name: str = "every_nth"
    interval: int = 3


class EveryNthRule:
    """Compute on warm-up steps and every ``interval``-th step after them; hit otherwise."""

    def __init__(self, interval: int):
        self.interval = interval

    def new_request(self, cache: BlockCache) -> None:
        pass

    def should_hit(self, cache: BlockCache, state: BranchState, step: int, front_residual, entry) -> bool:
        on_schedule = (step - cache.config.warmup_steps) % self.interval == 0
        return not on_schedule and cache.may_cache(state, step)


class EveryNthTransform(ForecastableBlockCache):
    """Installs the every-n-th-step block cache."""

    name = "cache.every_nth"
    stage = Stage.CACHE
    config_class = EveryNthConfig

    @classmethod
    def check(cls, config: EveryNthConfig, context) -> list[str]:
        problems = cls.block_problems(config, context, needs_threshold=False)
        if config.interval < 1:
            problems.append(f"cache.interval={config.interval}: use 1 (every step) or more")
        return problems

    @classmethod
    def describe(cls, config: EveryNthConfig, model_info) -> str:
        return (f"every-n-th step F{config.front_blocks}B{config.back_blocks} over {model_info.total_blocks} blocks, "
                f"interval={config.interval}, warmup_steps={config.warmup_steps}")

    def make_rule(self, transformer: str, context) -> EveryNthRule:
        return EveryNthRule(self.config.interval)
