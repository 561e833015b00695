"""Calibrate-stage transforms: forecasters bound to the installed block cache."""

from __future__ import annotations

from typing import Any

from dit_engine.adapter import ModelInfo
from dit_engine.caches.forecast import PolynomialExtrapolationForecaster, TaylorSeerForecaster
from dit_engine.config.schema import ABCacheConfig, TaylorSeerConfig
from dit_engine.plan import PlanContext, Stage
from dit_engine.transforms.base import ApplyContext, Transform


class TaylorSeerTransform(Transform):
    """``calibrator=taylorseer``: cached steps add a Taylor forecast of the residual, not the stale one."""

    name = "calibrate.taylorseer"
    stage = Stage.CALIBRATE
    config_class = TaylorSeerConfig
    forecaster_class = TaylorSeerForecaster
    label = "TaylorSeer"

    @classmethod
    def check(cls, config: TaylorSeerConfig, context: PlanContext) -> list[str]:
        problems = []
        if not 1 <= config.order <= 3:
            problems.append(f"calibrator.order={config.order}: use 1, 2 or 3")
        if config.warmup < 0:
            problems.append(f"calibrator.warmup={config.warmup} is negative; use 0 or more")
        return problems

    @classmethod
    def describe(cls, config: TaylorSeerConfig, model_info: ModelInfo) -> str:
        return f"{cls.label} order {config.order}, forecasting after {config.warmup} computed steps"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.caches = list(context.caches)
        forecaster = self.forecaster_class(self.config.order, self.config.warmup)
        for cache in self.caches:
            cache.forecaster = forecaster

    def remove(self, pipe: Any) -> None:
        for cache in self.caches:
            cache.forecaster = None
        self.caches = []


class ABCacheTransform(TaylorSeerTransform):
    """``calibrator=abcache``: cached steps add the Adams-Bashforth / polynomial extrapolation of the residual."""

    name = "calibrate.abcache"
    config_class = ABCacheConfig
    forecaster_class = PolynomialExtrapolationForecaster
    label = "AB-Cache extrapolation"
