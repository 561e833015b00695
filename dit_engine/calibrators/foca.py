"""FoCa (``calibrator=foca``, arXiv 2508.16211, "Forecast then Calibrate"): the cached residual (or
model output) is a trajectory of an ODE over the step index; a skipped step takes a multistep
prediction and calibrates it with a Heun-type (trapezoidal) corrector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dit_engine.calibrators.base import CalibratorTransform
from dit_engine.transforms.base import PlanContext
from dit_engine.calibrators.configs import FoCaConfig  # noqa: F401 - the schema, torch-free (re-exported)

#: FoCa is one scheme, second order: a BDF2 predictor and a Heun corrector.
SUPPORTED_ORDERS = (2,)


@dataclass
class FoCaHistory:
    """One residual stream at its last computed step."""

    value: torch.Tensor
    step: int
    updates: int
    slope: torch.Tensor | None = None  # secant over the last computed interval
    gap: int = 0  # steps in that interval
    bend: torch.Tensor | None = None  # BDF2 slope at the last computed step minus ``slope``


class FoCaForecaster:
    """Forecast then calibrate over the step index, from the last three computed values.

    With ``y0`` computed at step ``s0`` (``y1`` at ``s1``, ``y2`` at ``s2``), secants
    ``g0 = (y0 - y1) / (s0 - s1)`` and ``g1 = (y1 - y2) / (s1 - s2)``, a skipped step
    ``s0 + k``:

    * **forecast** (BDF2): the variable-step BDF2 formula with the slope at the new step taken
      from the last secant is explicit and reduces to ``y0 + k g0`` for any step ratio;
    * **calibrate** (Heun): the trapezoid ``y0 + k (g_bdf + g_pred) / 2`` averages the BDF2
      slope at the last computed step, ``g_bdf = g0 + (g0 - g1) (s0 - s1) / (s0 - s2)``, with
      the slope of the predicted step, ``g_pred = g0``;
    * the result moves ``correction`` of the way from the prediction to the corrector:
      ``y0 + k (g0 + correction * (g_bdf - g0) / 2)``.

    Exact on lines at any spacing; the slope is updated incrementally (no value list is kept).
    """

    #: the scheme's order (BDF2 / Heun); the forecast itself is linear in the step distance
    order = 2
    #: the forecast's degree in the step distance (its error grows like distance ** 2): what the
    #: adaptive step policy spaces computes by
    degree = 1

    def __init__(self, warmup: int, correction: float):
        self.warmup = warmup
        self.correction = correction

    def update(self, history: FoCaHistory | None, value: torch.Tensor, step: int) -> FoCaHistory:
        if history is None or history.value.shape != value.shape:
            return FoCaHistory(value, step, 1)
        gap = max(1, step - history.step)
        slope = (value - history.value) / gap
        bend = None
        if history.slope is not None:
            bend = (slope - history.slope) * (gap / (gap + history.gap))
        return FoCaHistory(value, step, history.updates + 1, slope, gap, bend)

    def forecast(self, history: FoCaHistory, step: int) -> torch.Tensor:
        if history.updates < self.warmup or history.slope is None:
            return history.value
        slope = history.slope
        if history.bend is not None:
            slope = slope + history.bend * (self.correction / 2)
        return history.value + slope * (step - history.step)


class FoCaTransform(CalibratorTransform):
    """``calibrator=foca``."""

    name = "calibrate.foca"
    config_class = FoCaConfig
    label = "FoCa forecast-then-calibrate"

    @classmethod
    def check(cls, config: FoCaConfig, context: PlanContext) -> list[str]:
        problems = []
        if config.order not in SUPPORTED_ORDERS:
            problems.append(f"calibrator.order={config.order}: FoCa is second order (BDF2 predictor, Heun corrector); use 2")
        if config.warmup < 2:
            problems.append(f"calibrator.warmup={config.warmup}: FoCa's predictor needs 2 computed values; use 2 or more")
        if not 0 <= config.correction <= 1:  # NaN fails too
            problems.append(f"calibrator.correction={config.correction} must be in [0, 1] (0: prediction only, 1: full Heun corrector)")
        return problems

    @classmethod
    def describe(cls, config: FoCaConfig, model_info: Any) -> str:
        return f"{cls.label}, correction {config.correction:g}, forecasting after {config.warmup} computed steps"

    def make_forecaster(self) -> FoCaForecaster:
        return FoCaForecaster(self.config.warmup, self.config.correction)
