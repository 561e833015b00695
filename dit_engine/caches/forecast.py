"""Forecasters that calibrators bind to a block cache (see ``caches.dbcache.Forecaster``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class TaylorHistory:
    """Finite-difference derivatives of one residual stream at its last computed step."""

    derivatives: list[torch.Tensor]
    step: int
    updates: int


class TaylorSeerForecaster:
    """TaylorSeer (arXiv 2503.06923): Taylor-expand the residual around the last computed step.

    ``update`` rebuilds the derivatives from the new value and the previous ones (divided
    differences over the step index); ``forecast`` evaluates the truncated series
    ``sum_i d_i * k**i / i!`` at ``k`` steps after the last computed one.
    """

    def __init__(self, order: int, warmup: int):
        self.order = order
        self.warmup = warmup

    def update(self, history: TaylorHistory | None, value: torch.Tensor, step: int) -> TaylorHistory:
        if history is None or history.derivatives[0].shape != value.shape:
            return TaylorHistory([value], step, 1)
        gap = max(1, step - history.step)
        derivatives = [value]
        for i in range(min(self.order, len(history.derivatives))):
            derivatives.append((derivatives[i] - history.derivatives[i]) / gap)
        return TaylorHistory(derivatives, step, history.updates + 1)

    def forecast(self, history: TaylorHistory, step: int) -> torch.Tensor:
        if history.updates < self.warmup:
            return history.derivatives[0]
        distance = step - history.step
        result = history.derivatives[0]
        for i, derivative in enumerate(history.derivatives[1:], start=1):
            result = result + derivative * (distance**i / math.factorial(i))
        return result


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
