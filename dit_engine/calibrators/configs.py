"""The calibrators' config dataclasses (the ``calibrator=`` schemas).

Torch-free: Hydra composes (and ``--help``, shell completion and the config checks read) these
schemas without importing torch; the transforms that use them import them from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

class TimeAxis(enum.StrEnum):
    """``calibrator.time``: what the forecast is a function of (see :class:`SpectrumConfig`)."""

    sigma = "sigma"
    step = "step"


@dataclass
class TaylorSeerConfig:
    """TaylorSeer calibrator (``calibrator=taylorseer``): forecast instead of reuse.

    On every computed step the cached residual's finite-difference derivatives (over the step
    index) are updated; a cached step then adds the Taylor forecast of the residual instead of the
    stale one. Binds to the installed block cache (``cache=dbcache``, ``fbcache``, ``scm``...).

    Attributes:
        name: transform implementation (``taylorseer``).
        order: highest derivative used, 1-3. Higher follows curved trajectories better but
            amplifies noise between far-apart computed steps.
        warmup: computed steps of history needed before the forecast is used (plain reuse until
            then); at least ``order`` + 1 gives every derivative its data.
    """

    name: str = "taylorseer"
    order: int = 1
    warmup: int = 2


@dataclass
class SpectrumConfig:
    """Spectrum calibrator (``calibrator=spectrum``): Chebyshev forecasting, blended with Taylor.

    Each computed value is a sample of a smooth function of the denoising time. A skipped step is
    answered with the ridge-regression fit of that function in a Chebyshev basis (degree
    ``degree``) through the last ``window`` computed values, evaluated at the skipped time, and
    blended with the first-order Taylor forecast from the last two computed values. Binds to the
    installed block cache wherever ``calibrator=taylorseer`` does (``cache=scm_static``: the
    whole model output; ``cache=dbcache`` and friends: the middle blocks' residual).

    Attributes:
        name: transform implementation (``spectrum``).
        degree: highest Chebyshev polynomial of the fit, 1-6. The fit needs ``degree`` + 1
            computed values before it is used (Taylor until then, reuse before that).
        ridge: weight of the ridge penalty on the non-constant coefficients, >= 0. It pulls the
            fit toward a constant where the computed values cannot pin the curve (few, or close
            together); 0 is plain least squares (exact through degree + 1 points).
        blend: the share of the Chebyshev forecast in the answer, in [0, 1]; the rest is the
            Taylor forecast (1: Chebyshev only, 0: Taylor only, i.e. ``calibrator=taylorseer``
            over the same time axis).
        window: computed values the fit uses (the latest), at least ``degree`` + 1.
        warmup: computed values needed before forecasting at all (plain reuse until then), >= 2.
        time: the axis the function is fitted over: ``sigma`` (the scheduler's noise level, so
            a shifted schedule's uneven steps are spaced as the model sees them; the step index
            where the scheduler has no sigmas) or ``step`` (the step index).

    The defaults were the best of a grid (blend 0.25-1, ridge 0.01-1, degree 2-3, window 4-6) on
    the embedded model with its own and with a shift-3 schedule, and on tiny FLUX, at 3, 5 and 7
    of 28 steps computed (``cache.layout=sigmas``): mean PSNR 37.3 / 38.7 / 51.7 dB against
    TaylorSeer's 36.7 / 36.2 / 50.5 and FoCa's 37.1 / 36.4 / 50.6. A ridge of 0.1 or more pulls
    the curvature away where it is real (shift 3: -0.6 dB); degree 3 needs more computes than a
    small budget has.
    """

    name: str = "spectrum"
    degree: int = 2
    ridge: float = 0.01
    blend: float = 0.5
    window: int = 4
    warmup: int = 2
    time: TimeAxis = TimeAxis.sigma


@dataclass
class ABCacheConfig:
    """AB-Cache calibrator (``calibrator=abcache``): Adams-Bashforth style extrapolation.

    On a cached step the residual is extrapolated with the polynomial through the last
    ``order`` + 1 computed values (over the step index). Binds to the installed block cache.

    Attributes:
        name: transform implementation (``abcache``).
        order: polynomial degree, 1-3 (1: linear extrapolation from the last two computes).
        warmup: computed values needed before extrapolating (plain reuse until then); at least 2.
    """

    name: str = "abcache"
    order: int = 1
    warmup: int = 2


@dataclass
class HiCacheConfig:
    """HiCache calibrator (``calibrator=hicache``): Hermite-basis forecasting.

    Keeps TaylorSeer's finite-difference derivatives of the cached residual (over the step
    index) but evaluates the terms of order two and up on scaled probabilists' Hermite
    polynomials ``scale**n * He_n(scale * k)`` instead of the monomials ``k**n``, ``k`` steps
    after the last computed one. The contraction keeps those terms small over long skips, where
    the monomials amplify the noise of the derivatives. Binds to the installed block cache.

    Attributes:
        name: transform implementation (``hicache``).
        order: highest derivative used, 2 or 3 (order 1 has no Hermite term: use
            ``calibrator=taylorseer``).
        warmup: computed steps of history needed before the forecast is used (plain reuse until
            then); from 2 on the first-order term applies, the Hermite terms join as their
            derivatives get data (``order`` + 1 computed steps).
        scale: the contraction ``sigma`` in (0, 1]: smaller shrinks the higher-order terms
            (toward TaylorSeer order 1), 1 is the unscaled ``He_n(k)``. 0.5 was best on the
            embedded model (28 steps, 3 to 7 computed); from 0.7 up the second-order term
            overshoots on long skips, as TaylorSeer's does.
    """

    name: str = "hicache"
    order: int = 2
    warmup: int = 2
    scale: float = 0.5


@dataclass
class FoCaConfig:
    """FoCa calibrator (``calibrator=foca``): forecast, then calibrate.

    The stored residual (with ``cache=scm_static``, the whole model output) is treated as the
    solution of an ODE over the step index. A skipped step first predicts it with the BDF2
    multistep formula from the last computed values, then calibrates the prediction with a
    Heun (trapezoidal) corrector that averages the second-order slope at the last computed step
    with the slope of the predicted step. Binds to the installed block cache.

    Attributes:
        name: transform implementation (``foca``).
        order: the scheme's order; FoCa is second order (BDF2 predictor, Heun corrector), so
            only 2 is accepted.
        warmup: computed values needed before forecasting (plain reuse until then), at least 2:
            the predictor needs two; the corrector joins once three exist.
        correction: how far the forecast moves from the prediction toward the Heun corrector:
            0 keeps the prediction (linear extrapolation), 1 applies the full trapezoidal
            corrector. The corrector bends the forecast by the slope change between the last
            computed intervals, which on long skips is noisy; 0.5 was best on the embedded model
            (28 steps, 5 or 7 computed: +0.1 to +0.9 dB over linear extrapolation; with only 3
            computed, up to 0.5 dB below it). 1 gains 0.3 dB more on evenly spread computes
            but loses up to 1 dB after short intervals (the ultra preset's computed head).
    """

    name: str = "foca"
    order: int = 2
    warmup: int = 2
    correction: float = 0.5
