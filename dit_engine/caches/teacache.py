"""TeaCache (``cache=teacache``, arXiv 2411.19108): skip whole steps while the polynomial-rescaled
relative L1 change of the timestep-modulated input, accumulated since the last computed step, stays
below the threshold.

It is the block cache with Fn = Bn = 0 (decided before the first block runs) and this rule; the
rescaling polynomial comes from ``cache.coefficients``, a ``calibration.json`` written by
``cache=fit_signals``, or the family's published one (:data:`TEACACHE_COEFFICIENTS`).

The family facts live here, beside the technique, keyed by adapter name (as diffusers keeps
``FLUX_MAG_RATIOS`` beside its MagCache hook): the published polynomials, the families whose
calibration ships with the engine, and the default thresholds. The tables are plain dicts: a plugin
adds its family's entries when its adapter module is imported (docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dit_engine.adapter import Adapter, ModelInfo, Probe
from dit_engine.caches.block_cache import (BlockCache, BranchState, WholeStepBlockCache, family_threshold,
                                           relative_l1)
from dit_engine.caches.signal_fit import FIT_SIGNALS_HINT, read_signals, signals_problem, values_problem
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, PlanContext
from dit_engine.caches.configs import TeaCacheConfig  # noqa: F401 - the schema, torch-free (re-exported)


#: TeaCache's published rescaling polynomials, highest power first, by adapter name. Keyed by
#: family rather than pipeline class: the polynomial is fitted to the transformer's modulated
#: input, which every pipeline of the family shares.
TEACACHE_COEFFICIENTS: dict[str, list[float]] = {
    # TeaCache4FLUX
    "flux": [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01],
}

#: ``cache.threshold`` defaults by adapter name, over :data:`LARGE_DIT_TEACACHE_THRESHOLD`.
TEACACHE_THRESHOLDS: dict[str, float] = {
    "tiny": 0.2,  # measured on the embedded digits model at 28 steps (benchmarks/, docs/caches.md)
    "flux": 0.4,  # TeaCache4FLUX's threshold (about 1.8x at 28 steps)
}
#: The threshold of every other diffusers DiT (its coefficients come from a calibration run).
LARGE_DIT_TEACACHE_THRESHOLD = 0.2


def _digits_calibration() -> Path:
    # Imported on use: the digits model's package loads diffusers' FLUX transformer, which a
    # TeaCache / MagCache plan for any other family does not need.
    from dit_engine.digits.model import WEIGHTS_DIR

    return WEIGHTS_DIR / "calibration.json"


#: Families whose ``calibration.json`` (a ``cache=fit_signals`` output) ships with the engine,
#: by adapter name: TeaCache and MagCache take their section of it when no values are published.
SHIPPED_CALIBRATIONS: dict[str, Callable[[], Path]] = {
    "tiny": _digits_calibration,  # a signal fit on workload=bench_16, next to the weights
}


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
    #: family -> published values (the technique's table, e.g. :data:`TEACACHE_COEFFICIENTS`)
    published: dict[str, list[float]] = {}
    #: family -> threshold, and the threshold of every other diffusers family
    thresholds: dict[str, float] = {}
    large_dit_threshold: float = 0.0

    @classmethod
    def published_values(cls, adapter: Adapter) -> list[float] | None:
        """The family's values: ``published[adapter.name]``, else its shipped calibration's
        ``section``, else None. A fresh list (the resolved config may be changed)."""
        if adapter.name in cls.published:
            return list(cls.published[adapter.name])
        if adapter.name in SHIPPED_CALIBRATIONS:
            return list(read_signals(str(SHIPPED_CALIBRATIONS[adapter.name]()), cls.section, "transformer")[cls.value_key])
        return None

    @classmethod
    def family_defaults(cls, adapter: Adapter) -> dict[str, Any]:
        """The family's threshold and published (or shipped) values."""
        defaults = family_threshold(cls.thresholds, cls.large_dit_threshold, adapter)
        values = cls.published_values(adapter)
        if values is not None:
            defaults[cls.value_key] = values
        return defaults

    @classmethod
    def values(cls, config: Any, transformer: str | None = None):
        """The calibrated values: the signals file's when set, else the config's (or the family's)."""
        if config.signals_file:
            return read_signals(config.signals_file, cls.section, transformer)[cls.value_key]
        return getattr(config, cls.value_key)

    @classmethod
    def check(cls, config: Any, context: PlanContext) -> list[str]:
        problems = cls.block_problems(config, context)
        problem = signals_problem(config.signals_file, cls.section, cls.value_key, context.adapter.name)
        values = getattr(config, cls.value_key)
        if problem:
            problems.append(problem)
        elif not config.signals_file and values is None:
            problems.append(f"model '{context.adapter.name}' has no published {cls.section} {cls.value_key.replace('_', ' ')}; {FIT_SIGNALS_HINT}")
        elif not config.signals_file:
            problem = values_problem(list(values), f"cache.{cls.value_key}", positive=cls.value_key == "mag_ratios")
            if problem:
                problems.append(f"{problem}; give the calibrated values or {FIT_SIGNALS_HINT}")
        return problems


class TeaCacheTransform(WholeStepCacheTransform):
    """``cache=teacache``."""

    name = "cache.teacache"
    stage = Stage.CACHE
    config_class = TeaCacheConfig
    section, value_key = "teacache", "coefficients"
    published, thresholds, large_dit_threshold = TEACACHE_COEFFICIENTS, TEACACHE_THRESHOLDS, LARGE_DIT_TEACACHE_THRESHOLD

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
        source = config.signals_file or "adapter / config coefficients"
        return f"TeaCache whole-step skip over {model_info.total_blocks} blocks, threshold={config.threshold}, coefficients from {source}"

    def make_rule(self, transformer: str, context: ApplyContext) -> TeaCacheRule:
        return TeaCacheRule(context.adapter.teacache_probe, self.values(self.config, transformer), self.config.threshold)
