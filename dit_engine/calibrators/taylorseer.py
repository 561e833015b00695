"""TaylorSeer (``calibrator=taylorseer``, arXiv 2503.06923): cached steps add the Taylor forecast
of the cached residual (finite differences over the step index) instead of the stale one."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dit_engine.calibrators.base import CalibratorTransform
from dit_engine.calibrators.configs import TaylorSeerConfig  # noqa: F401 - the schema, torch-free (re-exported)


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
        self.degree = order  # a Taylor series of order n is a polynomial of degree n in the gap
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


class TaylorSeerTransform(CalibratorTransform):
    """``calibrator=taylorseer``."""

    name = "calibrate.taylorseer"
    config_class = TaylorSeerConfig
    label = "TaylorSeer"

    def make_forecaster(self) -> TaylorSeerForecaster:
        return TaylorSeerForecaster(self.config.order, self.config.warmup)
