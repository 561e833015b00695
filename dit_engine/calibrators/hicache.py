"""HiCache (``calibrator=hicache``, arXiv 2508.16984): TaylorSeer's forecast with the monomial
basis of its higher-order terms replaced by scaled Hermite polynomials."""

from __future__ import annotations

import math
from typing import Any

import torch

from dit_engine.calibrators.base import CalibratorTransform
from dit_engine.calibrators.taylorseer import TaylorHistory, TaylorSeerForecaster
from dit_engine.transforms.base import PlanContext
from dit_engine.calibrators.configs import HiCacheConfig  # noqa: F401 - the schema, torch-free (re-exported)

#: Order 1 has no Hermite term (it is ``calibrator=taylorseer``); 2 and 3 do.
SUPPORTED_ORDERS = (2, 3)


def hermite(n: int, x: float) -> float:
    """The probabilists' Hermite polynomial ``He_n(x)`` (``He_{n+1} = x He_n - n He_{n-1}``)."""
    previous, current = 1.0, x
    if n == 0:
        return previous
    for i in range(1, n):
        previous, current = current, x * current - i * previous
    return current


class HiCacheForecaster(TaylorSeerForecaster):
    """HiCache (arXiv 2508.16984): TaylorSeer's derivatives on a scaled Hermite basis.

    ``forecast`` evaluates ``d_0 + d_1 k + sum_{n>=2} d_n / n! * s**n He_n(s k)`` (``s`` the
    scale): the contracted argument ``s k`` keeps the polynomial in its flat region and the
    factor ``s**n`` keeps each term's size in check, the paper's dual scaling. The first-order
    term keeps the plain step distance: scaling it too only biases the forecast toward reuse
    (measured worse on the embedded model).
    """

    def __init__(self, order: int, warmup: int, scale: float):
        super().__init__(order, warmup)
        self.scale = scale

    def forecast(self, history: TaylorHistory, step: int) -> torch.Tensor:
        derivatives = history.derivatives
        if history.updates < self.warmup or len(derivatives) == 1:
            return derivatives[0]
        distance = step - history.step
        result = derivatives[0] + derivatives[1] * distance
        for n, derivative in enumerate(derivatives[2:], start=2):
            basis = self.scale**n * hermite(n, self.scale * distance) / math.factorial(n)
            result = result + derivative * basis
        return result


class HiCacheTransform(CalibratorTransform):
    """``calibrator=hicache``."""

    name = "calibrate.hicache"
    config_class = HiCacheConfig
    label = "HiCache Hermite forecast"

    @classmethod
    def check(cls, config: HiCacheConfig, context: PlanContext) -> list[str]:
        problems = []
        if config.order not in SUPPORTED_ORDERS:
            problems.append(f"calibrator.order={config.order}: HiCache uses Hermite terms of order 2 or 3; use 2 or 3 "
                            "(order 1 is calibrator=taylorseer)")
        if config.warmup < 0:
            problems.append(f"calibrator.warmup={config.warmup} is negative; use 0 or more")
        if not 0 < config.scale <= 1:  # NaN fails too
            problems.append(f"calibrator.scale={config.scale} must be in (0, 1]: the Hermite contraction, e.g. 0.5")
        return problems

    @classmethod
    def describe(cls, config: HiCacheConfig, model_info: Any) -> str:
        return f"{cls.label} order {config.order}, scale {config.scale:g}, forecasting after {config.warmup} computed steps"

    def make_forecaster(self) -> HiCacheForecaster:
        return HiCacheForecaster(self.config.order, self.config.warmup, self.config.scale)
