"""TeaCache (``cache=teacache``, arXiv 2411.19108): skip whole steps while the polynomial-rescaled
relative L1 change of the timestep-modulated input, accumulated since the last computed step, stays
below the threshold.

It is the block cache with Fn = Bn = 0 (decided before the first block runs) and this rule; the
rescaling polynomial comes from ``cache.coefficients``, a ``calibration.json`` written by
``cache=calibration_run``, or the adapter's published one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from dit_engine.adapter import ModelInfo, Probe
from dit_engine.caches.block_cache import BlockCache, BlockCacheConfig, BranchState, WholeStepBlockCache, relative_l1
from dit_engine.caches.calibration import CALIBRATE_HINT, calibration_problem, read_calibration, values_problem
from dit_engine.plan import PlanContext, Stage
from dit_engine.transforms.base import ApplyContext


@dataclass
class TeaCacheConfig(BlockCacheConfig):
    """TeaCache (``cache=teacache``): skip whole steps while the polynomial-rescaled relative L1
    change of the timestep-modulated input, accumulated since the last computed step, stays below
    ``threshold``. The first and last steps always compute. ``front_blocks`` / ``back_blocks``
    do not apply (whole steps are skipped).

    Attributes:
        name: transform implementation (``teacache``).
        coefficients: the rescaling polynomial, highest power first. ``None``: from
            ``calibration_file``, else the adapter's published ones (FLUX, the tiny model).
        calibration_file: a ``calibration.json`` written by ``python -m dit_engine cache=calibration_run``.
    """

    name: str = "teacache"
    front_blocks: int = 0
    coefficients: Optional[list[float]] = None
    calibration_file: Optional[str] = None


@dataclass
class TeaBranch:
    probe: Any = None  # the modulated input of the previous call
    accumulated: float = 0.0  # rescaled change since the last compute


class TeaCacheRule:
    """Accumulate the rescaled change of the probe; hit while the sum stays below the threshold,
    reset it on a compute. The first and the last step always compute."""

    def __init__(self, probe: Probe, coefficients: list[float], threshold: float):
        self.probe = probe
        self.polynomial = np.poly1d(list(coefficients))
        self.threshold = threshold

    def new_request(self, cache: BlockCache) -> None:
        pass

    def should_hit(self, cache: BlockCache, state: BranchState, step: int, front_residual, entry) -> bool:
        if self.threshold <= 0:
            return False  # nothing can ever be cached: the probe (a modulation every step) is not worth computing
        signal = state.rule = state.rule or TeaBranch()
        probe = self.probe(*entry)
        previous, signal.probe = signal.probe, probe
        num_steps = cache.step_state.num_steps
        last = num_steps and step == num_steps - 1
        if previous is None or previous.shape != probe.shape or last or not cache.may_cache(state, step):
            signal.accumulated = 0.0
            return False
        signal.accumulated += float(self.polynomial(relative_l1(probe, previous, cache.group)))
        if signal.accumulated < self.threshold:
            return True
        signal.accumulated = 0.0
        return False


class WholeStepCacheTransform(WholeStepBlockCache):
    """A whole-step block cache with calibrated values (``section`` of a calibration.json, key
    ``value_key``): TeaCache and MagCache."""

    section = ""
    value_key = ""

    @classmethod
    def values(cls, config: Any, transformer: str | None = None):
        """The calibrated values: the calibration file's when set, else the config's (or the adapter's)."""
        if config.calibration_file:
            return read_calibration(config.calibration_file, cls.section, transformer)[cls.value_key]
        return getattr(config, cls.value_key)

    @classmethod
    def check(cls, config: Any, context: PlanContext) -> list[str]:
        problems = cls.block_problems(config, context)
        problem = calibration_problem(config.calibration_file, cls.section, cls.value_key, context.adapter.name)
        values = getattr(config, cls.value_key)
        if problem:
            problems.append(problem)
        elif not config.calibration_file and values is None:
            problems.append(f"model '{context.adapter.name}' has no published {cls.section} {cls.value_key.replace('_', ' ')}; {CALIBRATE_HINT}")
        elif not config.calibration_file:
            problem = values_problem(list(values), f"cache.{cls.value_key}", positive=cls.value_key == "mag_ratios")
            if problem:
                problems.append(f"{problem}; give the calibrated values or {CALIBRATE_HINT}")
        return problems


class TeaCacheTransform(WholeStepCacheTransform):
    """``cache=teacache``."""

    name = "cache.teacache"
    stage = Stage.CACHE
    config_class = TeaCacheConfig
    section, value_key = "teacache", "coefficients"
    adapter_facts = {"coefficients": "teacache_coefficients"}

    @classmethod
    def check(cls, config: TeaCacheConfig, context: PlanContext) -> list[str]:
        problems = super().check(config, context)
        if context.adapter.teacache_probe is None:
            problems.append(
                f"cache=teacache needs the timestep-modulated input, and adapter '{context.adapter.name}' does not say where "
                "it is (teacache_probe); use cache=magcache or cache=dbcache"
            )
        return problems

    @classmethod
    def describe(cls, config: TeaCacheConfig, model_info: ModelInfo) -> str:
        source = config.calibration_file or "adapter / config coefficients"
        return f"TeaCache whole-step skip over {model_info.total_blocks} blocks, threshold={config.threshold}, coefficients from {source}"

    def make_rule(self, transformer: str, context: ApplyContext) -> TeaCacheRule:
        return TeaCacheRule(context.adapter.teacache_probe, self.values(self.config, transformer), self.config.threshold)
