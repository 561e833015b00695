"""Spectrum (``calibrator=spectrum``, arXiv 2603.01623): forecast a cached residual (or model
output) with a Chebyshev-basis ridge regression over the denoising time, fitted on the last
computed values, blended with a first-order Taylor term."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dit_engine.calibrators.base import CalibratorTransform
from dit_engine.steps import StepState
from dit_engine.transforms.base import ApplyContext, PlanContext
from dit_engine.calibrators.configs import SpectrumConfig, TimeAxis  # noqa: F401 - the schema, torch-free (re-exported)


#: Chebyshev degrees the fit accepts: above 6 the few computed values of a cached request cannot
#: pin the curve, and the polynomials oscillate between them.
MAX_DEGREE = 6


@dataclass
class SpectrumHistory:
    """The last computed values of one stream, with their times in [-1, 1]."""

    values: list[torch.Tensor]
    times: list[float]


def chebyshev_basis(times: np.ndarray, degree: int) -> np.ndarray:
    """``T_0 .. T_degree`` at each time (rows), by the three-term recurrence."""
    basis = np.ones((len(times), degree + 1))
    if degree >= 1:
        basis[:, 1] = times
    for j in range(2, degree + 1):
        basis[:, j] = 2 * times * basis[:, j - 1] - basis[:, j - 2]
    return basis


@functools.lru_cache(maxsize=4096)
def _ridge_weights(times: tuple[float, ...], at: float, degree: int, ridge: float) -> np.ndarray:
    fitted = min(degree, len(times) - 1) if ridge == 0 else degree  # least squares needs points
    phi = chebyshev_basis(np.asarray(times, dtype=np.float64), fitted)
    penalty = np.diag([0.0, 0.0][: fitted + 1] + [ridge] * (fitted - 1))
    target = chebyshev_basis(np.asarray([at], dtype=np.float64), fitted)[0]
    weights = phi @ (np.linalg.pinv(phi.T @ phi + penalty) @ target)
    weights.setflags(write=False)  # shared by every caller with the same times
    return weights


def ridge_weights(times: list[float], at: float, degree: int, ridge: float) -> np.ndarray:
    """The weights ``a`` such that ``sum_i a_i y_i`` is the ridge fit's value at ``at``.

    The fit is ``argmin_c |Phi c - y|^2 + ridge * |c_1..|^2`` with ``Phi`` the Chebyshev basis at
    ``times``; the constant coefficient is not penalised, so the fit of a constant is exact. Its
    value at ``at`` is linear in ``y``: ``phi(at) (Phi^T Phi + P)^-1 Phi^T y``. The weights are
    computed in float64 on the few times (cached: every request of a step count asks for the same
    ones), then one weighted sum of tensors gives the forecast. Only the curvature (degree 2 and
    up) is penalised, so the ridge pulls toward the least-squares line, never toward a constant.
    """
    return _ridge_weights(tuple(times), at, degree, ridge)


class SpectrumForecaster:
    """Chebyshev ridge forecast blended with first-order Taylor, over sigma or the step index."""

    #: the blend's error grows at least like the Taylor term's: gap ** 2 (SCM's adaptive policy)
    degree = 1

    def __init__(self, config: SpectrumConfig, step_state: StepState | None = None):
        self.config = config
        self.step_state = step_state

    def time(self, step: int) -> float:
        """``step``'s position on the fit's axis, in [-1, 1] (1: the first step)."""
        state = self.step_state
        sigmas = state.sigmas if state is not None else None
        if self.config.time == TimeAxis.sigma and sigmas and step < len(sigmas):
            top, bottom = max(sigmas), min(sigmas)
            if top > bottom:
                return 2 * (sigmas[step] - bottom) / (top - bottom) - 1
        steps = state.num_steps if state is not None and state.num_steps > 1 else 0
        if steps:
            return 1 - 2 * step / (steps - 1)
        return -float(step)  # no step count: the raw index (the fit is still linear in it)

    def update(self, history: SpectrumHistory | None, value: torch.Tensor, step: int) -> SpectrumHistory:
        if history is None or history.values[-1].shape != value.shape:
            return SpectrumHistory([value], [self.time(step)])
        keep = max(self.config.window, 2)
        return SpectrumHistory((history.values + [value])[-keep:], (history.times + [self.time(step)])[-keep:])

    def forecast(self, history: SpectrumHistory, step: int) -> torch.Tensor:
        values, times = history.values, history.times
        if len(values) < max(2, self.config.warmup) or times[-1] == times[-2]:
            return values[-1]
        at = self.time(step)
        # first-order Taylor through the last two values: weights (1 + r, -r) on (y_-1, y_-2)
        ratio = (at - times[-1]) / (times[-1] - times[-2])
        weights = np.zeros(len(values))
        weights[-1], weights[-2] = 1 + ratio, -ratio
        c = self.config
        if c.blend > 0 and len(values) >= c.degree + 1:
            weights = (1 - c.blend) * weights + c.blend * ridge_weights(times, at, c.degree, c.ridge)
        result = values[-1] * float(weights[-1])
        for value, weight in zip(values[:-1], weights[:-1]):
            if weight != 0:
                result = result + value * float(weight)
        return result


def spectrum_problems(config: SpectrumConfig) -> list[str]:
    """Why the settings cannot forecast, each a one-line fix (history and window sizes included)."""
    problems = []
    if not 1 <= config.degree <= MAX_DEGREE:
        problems.append(f"calibrator.degree={config.degree}: use a Chebyshev degree from 1 to {MAX_DEGREE}")
    elif config.window < config.degree + 1:
        problems.append(f"calibrator.degree={config.degree} needs {config.degree + 1} computed values but calibrator.window="
                        f"{config.window} keeps {config.window}; raise calibrator.window to {config.degree + 1} or lower the degree")
    if not config.ridge >= 0:  # NaN fails too
        problems.append(f"calibrator.ridge={config.ridge} must be >= 0 (0: plain least squares), e.g. calibrator.ridge=0.1")
    if not 0 <= config.blend <= 1:
        problems.append(f"calibrator.blend={config.blend} must be in [0, 1] (1: Chebyshev only, 0: Taylor only)")
    if config.warmup < 2:
        problems.append(f"calibrator.warmup={config.warmup}: Spectrum's Taylor term needs 2 computed values; use 2 or more")
    return problems


class SpectrumTransform(CalibratorTransform):
    """``calibrator=spectrum``."""

    name = "calibrate.spectrum"
    config_class = SpectrumConfig
    label = "Spectrum Chebyshev forecast"

    @classmethod
    def check(cls, config: SpectrumConfig, context: PlanContext) -> list[str]:
        return spectrum_problems(config)

    @classmethod
    def describe(cls, config: SpectrumConfig, model_info: Any) -> str:
        return (f"{cls.label}, degree {config.degree} over {config.time}, ridge {config.ridge:g}, blend {config.blend:g} "
                f"with Taylor, window {config.window}, forecasting after {config.warmup} computed steps")

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.step_state = context.step_state  # the fit's time axis: this request's sigmas
        super().apply(pipe, context)

    def make_forecaster(self) -> SpectrumForecaster:
        return SpectrumForecaster(self.config, self.step_state)
