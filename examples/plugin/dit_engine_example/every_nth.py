"""``cache=every_nth``: the block cache recomputes its middle blocks every ``interval`` steps and
reuses them in between (a fixed schedule, no probe: FORA-style reuse).

A whole cache technique: its decision rule and its transform here, its config dataclass (the Hydra
schema ``schema_every_nth``) in the torch-free ``every_nth_config`` (the ``dit_engine.schemas``
entry point). It plugs into dit_engine's block cache, so calibrators (``calibrator=taylorseer``) bind to it.
"""

from __future__ import annotations

from dit_engine.caches.block_cache import BlockCache, BranchState, ForecastableBlockCache
from dit_engine.plan import Stage
from dit_engine_example.every_nth_config import EveryNthConfig


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
        return cls.block_problems(config, context, needs_threshold=False)  # includes config.value_problems()

    @classmethod
    def describe(cls, config: EveryNthConfig, model_info) -> str:
        return (f"every-n-th step F{config.front_blocks}B{config.back_blocks} over {model_info.total_blocks} blocks, "
                f"interval={config.interval}, warmup_steps={config.warmup_steps}")

    def make_rule(self, transformer: str, context) -> EveryNthRule:
        return EveryNthRule(self.config.interval)
