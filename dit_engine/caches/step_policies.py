"""Whole-step decisions from a cheap signal: TeaCache and MagCache.

Both skip the whole block stack (Fn = Bn = 0, decided before the first block runs) and reuse (or,
with a calibrator, forecast) its residual; they differ in what tells them a step may be skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from dit_engine.caches.dbcache import BranchState, DBCacheState, relative_l1

#: ``probe(first_block, args, kwargs) -> tensor``: the timestep-modulated input TeaCache watches.
Probe = Callable[[torch.nn.Module, tuple, dict], torch.Tensor]


class TeaCacheState(DBCacheState):
    """TeaCache (arXiv 2411.19108): accumulate the polynomial-rescaled relative L1 change of the
    timestep-modulated input; skip while the sum stays below the threshold, reset it on a compute.
    The first and the last step always compute."""

    def __init__(self, *args, probe: Probe, coefficients: Sequence[float], **kwargs):
        super().__init__(*args, **kwargs)
        self.probe = probe
        self.polynomial = np.poly1d(list(coefficients))

    def should_hit(self, state: BranchState, step: int, front_residual, entry) -> bool:
        probe = self.probe(*entry)
        previous, state.probe = state.probe, probe
        last = self.step_state.num_steps and step == self.step_state.num_steps - 1
        if previous is None or previous.shape != probe.shape or last or not self._may_cache(state, step):
            state.accumulated = 0.0
            return False
        state.accumulated += float(self.polynomial(relative_l1(probe, previous)))
        if state.accumulated < self.settings.threshold:
            return True
        state.accumulated = 0.0
        return False


def resample_ratios(ratios: Sequence[float], num_steps: int) -> list[float]:
    """A per-step magnitude-ratio curve for ``num_steps`` steps from one measured at another count.

    The curve is interpolated in normalised time, and each log-ratio is scaled by the step-size
    ratio, so the cumulative magnitude change over the whole trajectory is preserved.
    """
    measured = len(ratios)
    if measured == num_steps:
        return list(ratios)
    if num_steps <= 1 or measured <= 1:
        return [1.0] * num_steps
    source = np.linspace(0.0, 1.0, measured)
    target = np.linspace(0.0, 1.0, num_steps)
    logs = np.interp(target, source, np.log(np.clip(np.asarray(ratios, dtype=float), 1e-6, None)))
    return [1.0] + [math.exp(v * (measured - 1) / (num_steps - 1)) for v in logs[1:]]


class MagCacheState(DBCacheState):
    """MagCache (arXiv 2506.09045): the residual magnitude ratio between consecutive steps follows
    a per-model curve; skip while the accumulated deviation of the ratio product from 1 stays
    below the threshold, for at most ``max_continuous_cached_steps`` steps in a row. The first
    ``retention_ratio`` of the steps always compute."""

    def __init__(self, *args, mag_ratios: Sequence[float], retention_ratio: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.mag_ratios = list(mag_ratios)
        self.retention_ratio = retention_ratio
        self.curve: list[float] = []

    def new_request(self) -> None:
        super().new_request()
        self.curve = resample_ratios(self.mag_ratios, self.step_state.num_steps) if self.step_state.num_steps else []

    def should_hit(self, state: BranchState, step: int, front_residual, entry) -> bool:
        retained = int(self.retention_ratio * len(self.curve) + 0.5)
        if step < retained or step >= len(self.curve) or not self._may_cache(state, step):
            state.accumulated, state.accumulated_ratio = 0.0, 1.0
            return False
        state.accumulated_ratio *= self.curve[step]
        state.accumulated += abs(1.0 - state.accumulated_ratio)
        if state.accumulated < self.settings.threshold:
            return True
        state.accumulated, state.accumulated_ratio = 0.0, 1.0
        return False
