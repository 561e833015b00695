"""Whole-step caches decided from a cheap signal (``cache.teacache``, ``cache.magcache``) and the
run that calibrates them (``cache.calibrate``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from dit_engine.adapter import Adapter, ModelInfo
from dit_engine.caches.calibration import HOOK_NAME as CALIBRATE_HOOK
from dit_engine.caches.calibration import install_recorder
from dit_engine.caches.dbcache import install_dbcache
from dit_engine.caches.step_policies import MagCacheState, TeaCacheState
from dit_engine.config.schema import CalibrateConfig, MagCacheConfig, TeaCacheConfig
from dit_engine.plan import PlanContext, Stage
from dit_engine.transforms.base import ApplyContext, Transform
from dit_engine.transforms.cache import DBCacheTransform

CALIBRATE_HINT = (
    "run `python -m dit_engine cache=calibrate` on this model (it writes calibration.json into the run directory) "
    "and pass cache.calibration_file=<run dir>/calibration.json"
)


def read_calibration(path: str, section: str, transformer: str | None = None) -> dict | None:
    """One section (``teacache`` / ``magcache``) of a calibration.json, for ``transformer`` or the first one."""
    data = json.loads(Path(path).expanduser().read_text())
    per_transformer = data.get("transformers", {})
    entry = per_transformer.get(transformer) if transformer else None
    entry = entry or next(iter(per_transformer.values()), {})
    return entry.get(section)


def calibration_problem(path: str | None, section: str) -> str | None:
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        return f"cache.calibration_file={path} does not exist; {CALIBRATE_HINT}"
    try:
        found = read_calibration(path, section)
    except (OSError, ValueError) as err:
        return f"cache.calibration_file={path} is not a dit_engine calibration.json ({err}); {CALIBRATE_HINT}"
    if not found:
        return f"cache.calibration_file={path} has no {section} section (the model's adapter gives no probe for it?); {CALIBRATE_HINT}"
    return None


class _WholeStepCache(DBCacheTransform):
    """Shared by TeaCache and MagCache: Fn = Bn = 0, decided before the first block runs."""

    min_front_blocks = 0
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
        problems = [p for p in super().check(config, context) if "front_blocks" not in p]
        problem = calibration_problem(config.calibration_file, cls.section)
        if problem:
            problems.append(problem)
        elif not config.calibration_file and getattr(config, cls.value_key) is None:
            problems.append(f"model '{context.adapter.name}' has no published {cls.section} {cls.value_key.replace('_', ' ')}; {CALIBRATE_HINT}")
        return problems

    def settings(self):
        settings = super().settings()
        settings.front_blocks = settings.back_blocks = 0
        return settings

    def state_factory(self, name: str, context: ApplyContext):
        """The cache-state class, with its calibrated values bound, for transformer ``name``."""
        raise NotImplementedError

    def install(self, name: str, transformer: Any, context: ApplyContext):
        return install_dbcache(name, transformer, context.adapter.block_lists(transformer), self.settings(),
                               context.step_state, self.state_factory(name, context))


class TeaCacheTransform(_WholeStepCache):
    """``cache=teacache`` (see ``dit_engine.caches.step_policies.TeaCacheState``)."""

    name = "cache.teacache"
    config_class = TeaCacheConfig
    section, value_key = "teacache", "coefficients"

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

    def state_factory(self, name: str, context: ApplyContext):
        return functools.partial(TeaCacheState, probe=context.adapter.teacache_probe, coefficients=self.values(self.config, name))


class MagCacheTransform(_WholeStepCache):
    """``cache=magcache`` (see ``dit_engine.caches.step_policies.MagCacheState``)."""

    name = "cache.magcache"
    config_class = MagCacheConfig
    section, value_key = "magcache", "mag_ratios"

    @classmethod
    def check(cls, config: MagCacheConfig, context: PlanContext) -> list[str]:
        problems = super().check(config, context)
        if not 0 <= config.retention_ratio < 1:
            problems.append(f"cache.retention_ratio={config.retention_ratio}: use a fraction in [0, 1)")
        return problems

    @classmethod
    def describe(cls, config: MagCacheConfig, model_info: ModelInfo) -> str:
        source = config.calibration_file or "adapter / config ratios"
        return (
            f"MagCache whole-step skip over {model_info.total_blocks} blocks, threshold={config.threshold}, "
            f"retention_ratio={config.retention_ratio}, max_continuous_cached_steps={config.max_continuous_cached_steps}, "
            f"ratios from {source} (interpolated to the step count)"
        )

    def state_factory(self, name: str, context: ApplyContext):
        return functools.partial(MagCacheState, mag_ratios=self.values(self.config, name), retention_ratio=self.config.retention_ratio)


class CalibrateTransform(Transform):
    """``cache=calibrate``: compute every step and record TeaCache's and MagCache's signals."""

    name = "cache.calibrate"
    stage = Stage.CACHE
    config_class = CalibrateConfig

    @classmethod
    def describe(cls, config: CalibrateConfig, model_info: ModelInfo) -> str:
        return "calibration run: every step computes; writes calibration.json (TeaCache polynomial, MagCache ratios)"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.adapter: Adapter = context.adapter
        self.recorders = {}
        self.hooked = []
        for name, transformer in context.transformers.items():
            recorder, hooked = install_recorder(context.adapter.block_lists(transformer), context.step_state, context.adapter.teacache_probe)
            self.recorders[name] = recorder
            self.hooked += hooked

    def remove(self, pipe: Any) -> None:
        from dit_engine.hooks import remove_hook

        for block in self.hooked:
            remove_hook(block, CALIBRATE_HOOK)
        self.hooked = []

    def artifacts(self) -> dict[str, Any]:
        return {
            "calibration.json": {
                "model": self.adapter.name,
                "transformers": {name: recorder.result() for name, recorder in self.recorders.items()},
            }
        }
