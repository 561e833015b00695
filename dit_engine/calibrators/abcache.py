"""AB-Cache (``calibrator=abcache``, arXiv 2504.10540): cached steps add the Adams-Bashforth /
polynomial extrapolation of the cached residual through the last computed values."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dit_engine.calibrators.base import CalibratorTransform
from dit_engine.calibrators.configs import ABCacheConfig  # noqa: F401 - the schema, torch-free (re-exported)


@dataclass
class ExtrapolationHistory:
    """The last computed values of one residual stream and the steps they were computed at."""

    values: list[torch.Tensor]
    steps: list[int]


class PolynomialExtrapolationForecaster:
    """AB-Cache style forecast (arXiv 2504.10540, Adams-Bashforth cached feature reuse):
    extrapolate the residual with the polynomial through the last ``order`` + 1 computed values
    (Lagrange form over the step index). For evenly spaced computes this is the Adams-Bashforth
    combination of the cached values (order 1: ``2 r_t - r_{t-1}``); unlike TaylorSeer's
    backward-difference derivatives it is exact for polynomials of degree ``order`` at any spacing.
    """

    def __init__(self, order: int, warmup: int):
        self.order = order
        self.degree = order  # extrapolating n + 1 points: a polynomial of degree n in the gap
        self.warmup = warmup

    def update(self, history: ExtrapolationHistory | None, value: torch.Tensor, step: int) -> ExtrapolationHistory:
        if history is None or history.values[-1].shape != value.shape:
            return ExtrapolationHistory([value], [step])
        keep = self.order + 1
        return ExtrapolationHistory((history.values + [value])[-keep:], (history.steps + [step])[-keep:])

    def forecast(self, history: ExtrapolationHistory, step: int) -> torch.Tensor:
        if len(history.values) < max(2, self.warmup):
            return history.values[-1]
        points = history.steps
        result = torch.zeros_like(history.values[-1])
        for i, (value, at) in enumerate(zip(history.values, points)):
            weight = 1.0
            for j, other in enumerate(points):
                if j != i:
                    weight *= (step - other) / (at - other)
            result = result + value * weight
        return result


class ABCacheTransform(CalibratorTransform):
    """``calibrator=abcache``."""

    name = "calibrate.abcache"
    config_class = ABCacheConfig
    label = "AB-Cache extrapolation"

    def make_forecaster(self) -> PolynomialExtrapolationForecaster:
        return PolynomialExtrapolationForecaster(self.config.order, self.config.warmup)
