"""MagCache (``cache=magcache``, arXiv 2506.09045): the residual magnitude ratio between
consecutive steps follows a per-model curve; skip whole steps while the accumulated deviation of
the ratio product from 1 stays below the threshold, for at most ``max_continuous_cached_steps``
steps in a row. The first ``retention_ratio`` of the steps always compute.

The curve comes from ``cache.mag_ratios``, a ``calibration.json`` written by
``cache=fit_signals``, or the family's published one (:data:`MAG_RATIOS`, or a shipped
calibration: ``teacache.SHIPPED_CALIBRATIONS``); it is interpolated to any step count. The tables
are plain dicts keyed by adapter name: a plugin adds its family's entries when its adapter module
is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from dit_engine.adapter import ModelInfo
from dit_engine.caches.block_cache import BlockCache, BranchState
from dit_engine.caches.teacache import WholeStepCacheTransform
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, PlanContext
from dit_engine.caches.configs import MagCacheConfig  # noqa: F401 - the schema, torch-free (re-exported)


#: MagCache's published magnitude-ratio curves, by adapter name (keyed by family: the curve is a
#: property of the transformer's residuals, shared by every pipeline of the family).
MAG_RATIOS: dict[str, list[float]] = {
    "flux": [float(r) for r in FLUX_MAG_RATIOS],  # MagCache's FLUX curve, as diffusers ships it
}

#: ``cache.threshold`` defaults by adapter name, over :data:`LARGE_DIT_MAGCACHE_THRESHOLD`.
MAGCACHE_THRESHOLDS: dict[str, float] = {
    "tiny": 0.12,  # measured on the embedded digits model at 28 steps (benchmarks/, docs/caches.md)
}
#: The threshold of every other diffusers DiT.
LARGE_DIT_MAGCACHE_THRESHOLD = 0.06


def resample_ratios(ratios: Sequence[float], num_steps: int) -> list[float]:
    """A per-step magnitude-ratio curve for ``num_steps`` steps from one measured at another count.

    The curve is interpolated in normalised time, and each log-ratio is scaled by the step-size
    ratio, so the cumulative magnitude change over the whole trajectory is preserved.
    """
    measured = len(ratios)
    if measured == num_steps:
        return list(ratios)
    if num_steps <= 1 or measured <= 1:
        return [1.0] * num_steps
    source = np.linspace(0.0, 1.0, measured)
    target = np.linspace(0.0, 1.0, num_steps)
    logs = np.interp(target, source, np.log(np.clip(np.asarray(ratios, dtype=float), 1e-6, None)))
    return [1.0] + [math.exp(v * (measured - 1) / (num_steps - 1)) for v in logs[1:]]


@dataclass
class MagBranch:
    accumulated: float = 0.0  # error since the last compute
    accumulated_ratio: float = 1.0


class MagCacheRule:
    """Hit while the accumulated |1 - product of ratios| since the last compute stays small."""

    def __init__(self, mag_ratios: Sequence[float], retention_ratio: float, threshold: float):
        self.mag_ratios = list(mag_ratios)
        self.retention_ratio = retention_ratio
        self.threshold = threshold
        self.curve: list[float] = []

    def new_request(self, cache: BlockCache) -> None:
        num_steps = cache.step_state.num_steps
        self.curve = resample_ratios(self.mag_ratios, num_steps) if num_steps else []

    def should_hit(self, cache: BlockCache, state: BranchState, step: int, front_residual, entry) -> bool:
        signal = state.rule = state.rule or MagBranch()
        retained = int(self.retention_ratio * len(self.curve) + 0.5)
        if step < retained or step >= len(self.curve) or not cache.may_cache(state, step):
            signal.accumulated, signal.accumulated_ratio = 0.0, 1.0
            return False
        signal.accumulated_ratio *= self.curve[step]
        signal.accumulated += abs(1.0 - signal.accumulated_ratio)
        if signal.accumulated < self.threshold:
            return True
        signal.accumulated, signal.accumulated_ratio = 0.0, 1.0
        return False


class MagCacheTransform(WholeStepCacheTransform):
    """``cache=magcache``."""

    name = "cache.magcache"
    stage = Stage.CACHE
    config_class = MagCacheConfig
    section, value_key = "magcache", "mag_ratios"
    published, thresholds, large_dit_threshold = MAG_RATIOS, MAGCACHE_THRESHOLDS, LARGE_DIT_MAGCACHE_THRESHOLD

    @classmethod
    def check(cls, config: MagCacheConfig, context: PlanContext) -> list[str]:
        problems = super().check(config, context)
        if not 0 <= config.retention_ratio < 1:
            problems.append(f"cache.retention_ratio={config.retention_ratio}: use a fraction in [0, 1)")
        return problems

    @classmethod
    def describe(cls, config: MagCacheConfig, model_info: ModelInfo) -> str:
        source = config.signals_file or "adapter / config ratios"
        return (
            f"MagCache whole-step skip over {model_info.total_blocks} blocks, threshold={config.threshold}, "
            f"retention_ratio={config.retention_ratio}, max_continuous_cached_steps={config.max_continuous_cached_steps}, "
            f"ratios from {source} (interpolated to the step count)"
        )

    def make_rule(self, transformer: str, context: ApplyContext) -> MagCacheRule:
        return MagCacheRule(self.values(self.config, transformer), self.config.retention_ratio, self.config.threshold)
