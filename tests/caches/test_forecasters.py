"""The FoCa, HiCache and Spectrum forecasters: exactness on tensors, plan checks, and runs on the tiny model
and tiny FLUX behind step-level (``cache=scm_static``) and block-level (``cache=dbcache``) caches.

PSNR floors are the values measured on CPU (float32) less a margin of about 1.5 dB."""

from __future__ import annotations

import pytest
import torch

import dit_engine
from conftest import psnr
from dit_engine.calibrators.foca import FoCaForecaster
from dit_engine.calibrators.hicache import HiCacheForecaster, hermite
from dit_engine.calibrators.spectrum import SpectrumConfig, SpectrumForecaster, chebyshev_basis, ridge_weights
from dit_engine.calibrators.taylorseer import TaylorSeerForecaster
from dit_engine.steps import StepState
from dit_engine.errors import PlanError
from dit_engine.session import Session
from dit_engine.testing import tiny_flux_call_kwargs
from test_dbcache import run_tiny


def feed(forecaster, trajectory: dict[int, float]):
    history = None
    for step, value in trajectory.items():
        history = forecaster.update(history, torch.tensor([value], dtype=torch.float64), step)
    return history


# -- FoCa on tensors -------------------------------------------------------------------------


@pytest.mark.parametrize("correction", [0.0, 0.5, 1.0])
def test_foca_is_exact_on_lines_at_any_spacing(correction):
    forecaster = FoCaForecaster(warmup=2, correction=correction)
    history = feed(forecaster, {s: 2.0 * s + 1 for s in (0, 3, 5, 6)})  # uneven gaps
    for step in (7, 9, 14):
        assert forecaster.forecast(history, step).item() == pytest.approx(2.0 * step + 1)


def test_foca_calibrates_the_prediction_with_the_heun_corrector():
    quadratic = {s: 3.0 * s * s - s + 1 for s in (0, 2, 5)}  # y2, y1, y0 at steps 0, 2, 5
    g0, g1 = (71 - 11) / 3, (11 - 1) / 2  # secants of the last two intervals
    bdf2_slope = g0 + (g0 - g1) * 3 / 5  # derivative at step 5 of the parabola through the three
    assert bdf2_slope == pytest.approx(6 * 5 - 1)  # exact on a quadratic
    for correction in (0.0, 0.5, 1.0):
        forecaster = FoCaForecaster(warmup=2, correction=correction)
        # predictor y0 + k g0; Heun averages bdf2_slope with the predicted step's slope g0
        expected = 71 + 3 * (g0 + correction * (bdf2_slope - g0) / 2)
        assert forecaster.forecast(feed(forecaster, quadratic), 8).item() == pytest.approx(expected)
    truth = 3 * 64 - 8 + 1
    linear, heun = (FoCaForecaster(2, c) for c in (0.0, 1.0))
    assert abs(heun.forecast(feed(heun, quadratic), 8).item() - truth) < abs(linear.forecast(feed(linear, quadratic), 8).item() - truth)


def test_foca_reuses_the_last_value_until_warmup():
    forecaster = FoCaForecaster(warmup=3, correction=0.5)
    assert forecaster.forecast(feed(forecaster, {0: 1.0, 2: 5.0}), 4).item() == 5.0
    assert forecaster.forecast(feed(forecaster, {0: 1.0, 2: 5.0, 3: 7.0}), 4).item() == pytest.approx(9.0)
    changed = forecaster.update(feed(forecaster, {0: 1.0, 2: 5.0}), torch.zeros(2), 3)  # new shape: history restarts
    assert changed.updates == 1 and torch.equal(forecaster.forecast(changed, 5), torch.zeros(2))


# -- HiCache on tensors ----------------------------------------------------------------------


def test_hermite_polynomials_are_the_probabilists():
    for x in (-1.5, 0.0, 0.7, 3.0):
        assert [hermite(n, x) for n in range(4)] == pytest.approx([1, x, x * x - 1, x**3 - 3 * x])


@pytest.mark.parametrize("order", [2, 3])
def test_hicache_is_exact_on_lines(order):
    forecaster = HiCacheForecaster(order, warmup=2, scale=0.5)
    history = feed(forecaster, {s: 2.0 * s + 1 for s in (0, 3, 5, 6)})
    assert forecaster.forecast(history, 11).item() == pytest.approx(23.0)


def test_hicache_evaluates_the_taylor_derivatives_on_scaled_hermite_polynomials():
    cubic = {s: s**3 - 2.0 * s for s in (0, 1, 3, 4)}
    scale, k = 0.5, 3
    hicache = HiCacheForecaster(3, warmup=2, scale=scale)
    history = feed(hicache, cubic)
    d = [t.item() for t in feed(TaylorSeerForecaster(3, 2), cubic).derivatives]  # the same derivatives
    assert [t.item() for t in history.derivatives] == pytest.approx(d)
    x = scale * k
    expected = d[0] + d[1] * k + d[2] / 2 * scale**2 * (x * x - 1) + d[3] / 6 * scale**3 * (x**3 - 3 * x)
    assert hicache.forecast(history, 4 + k).item() == pytest.approx(expected)
    assert HiCacheForecaster(3, warmup=5, scale=scale).forecast(history, 4 + k).item() == cubic[4]  # before warmup


# -- plan checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["calibrator=foca", "calibrator.order=1"], "calibrator.order=1: FoCa is second order"),
        (["calibrator=foca", "calibrator.order=3"], "calibrator.order=3: FoCa is second order"),
        (["calibrator=foca", "calibrator.warmup=1"], "calibrator.warmup=1: FoCa's predictor needs 2 computed values"),
        (["calibrator=foca", "calibrator.correction=1.5"], "calibrator.correction=1.5 must be in [0, 1]"),
        (["calibrator=hicache", "calibrator.order=1"], "calibrator.order=1: HiCache uses Hermite terms of order 2 or 3"),
        (["calibrator=hicache", "calibrator.order=4"], "calibrator.order=4: HiCache uses Hermite terms of order 2 or 3"),
        (["calibrator=hicache", "calibrator.warmup=-1"], "calibrator.warmup=-1 is negative"),
        (["calibrator=hicache", "calibrator.scale=0"], "calibrator.scale=0.0 must be in (0, 1]"),
        (["calibrator=spectrum", "calibrator.degree=0"], "calibrator.degree=0: use a Chebyshev degree from 1 to 6"),
        (["calibrator=spectrum", "calibrator.degree=7"], "calibrator.degree=7: use a Chebyshev degree from 1 to 6"),
        (["calibrator=spectrum", "calibrator.degree=4"], "calibrator.degree=4 needs 5 computed values but calibrator.window=4"),
        (["calibrator=spectrum", "calibrator.ridge=-1"], "calibrator.ridge=-1.0 must be >= 0"),
        (["calibrator=spectrum", "calibrator.ridge=nan"], "calibrator.ridge=nan is not a finite number"),
        (["calibrator=spectrum", "calibrator.blend=1.5"], "calibrator.blend=1.5 must be in [0, 1]"),
        (["calibrator=spectrum", "calibrator.warmup=1"], "calibrator.warmup=1: Spectrum's Taylor term needs 2 computed values"),
    ],
)
def test_bad_forecaster_settings_are_one_line_plan_errors(overrides, expected):
    with pytest.raises(PlanError) as info:
        Session.from_overrides(["cache=scm_static", *overrides]).prepare()
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_default_settings_plan():
    for calibrator in ("foca", "hicache", "spectrum"):
        Session.from_overrides(["cache=scm_static", f"calibrator={calibrator}"]).prepare()


# -- Spectrum on tensors ---------------------------------------------------------------------


def test_chebyshev_basis_is_the_first_kind():
    times = torch.tensor([-1.0, -0.3, 0.5, 1.0]).numpy()
    basis = chebyshev_basis(times, 3)
    for row, t in zip(basis, times):
        assert list(row) == pytest.approx([1, t, 2 * t * t - 1, 4 * t**3 - 3 * t])


def test_ridge_zero_fits_polynomials_of_its_degree_exactly():
    times = [0.9, 0.4, -0.2, -0.5]
    cubic = [2 * t**3 - t + 0.5 for t in times]
    weights = ridge_weights(times, -0.8, degree=3, ridge=0.0)
    assert float(weights @ torch.tensor(cubic, dtype=torch.float64).numpy()) == pytest.approx(2 * (-0.8) ** 3 + 0.8 + 0.5)


def test_ridge_penalises_curvature_only():
    # a line is fitted exactly whatever the ridge: the constant and the slope are not penalised
    times = [1.0, 0.5, 0.0]
    weights = ridge_weights(times, -0.5, degree=2, ridge=100.0)
    assert float(weights @ torch.tensor([3 * t + 1 for t in times], dtype=torch.float64).numpy()) == pytest.approx(-0.5)


def sigma_state(sigmas):
    return StepState(num_steps=len(sigmas), sigmas=sigmas)


SHIFTED = [1.0, 0.98, 0.95, 0.9, 0.82, 0.7, 0.52, 0.3]  # uneven, like a shifted flow-matching schedule


@pytest.mark.parametrize("blend", [0.0, 0.5, 1.0])
def test_spectrum_is_exact_on_lines_in_sigma(blend):
    forecaster = SpectrumForecaster(SpectrumConfig(blend=blend, ridge=0.0), sigma_state(SHIFTED))
    history = feed(forecaster, {s: 4.0 * SHIFTED[s] - 1 for s in (0, 2, 3, 5)})
    for step in (6, 7):
        assert forecaster.forecast(history, step).item() == pytest.approx(4.0 * SHIFTED[step] - 1)


def test_spectrum_blend_zero_is_taylor_over_the_time_axis():
    taylor, spectrum = TaylorSeerForecaster(order=1, warmup=2), SpectrumForecaster(SpectrumConfig(blend=0.0, time="step"), sigma_state(SHIFTED))
    values = {0: 1.0, 3: 2.5, 4: 2.0}
    assert spectrum.forecast(feed(spectrum, values), 7).item() == pytest.approx(taylor.forecast(feed(taylor, values), 7).item())


def test_spectrum_chebyshev_term_follows_a_curve_taylor_cannot():
    quadratic = {s: 5 * SHIFTED[s] ** 2 for s in (0, 2, 4, 5)}
    spectrum = SpectrumForecaster(SpectrumConfig(blend=1.0, ridge=0.0, degree=2), sigma_state(SHIFTED))
    linear = SpectrumForecaster(SpectrumConfig(blend=0.0), sigma_state(SHIFTED))
    truth = 5 * SHIFTED[7] ** 2
    assert spectrum.forecast(feed(spectrum, quadratic), 7).item() == pytest.approx(truth)
    assert abs(linear.forecast(feed(linear, quadratic), 7).item() - truth) > 0.1


def test_spectrum_reuses_until_warmup_and_keeps_its_window():
    forecaster = SpectrumForecaster(SpectrumConfig(warmup=3, window=3), sigma_state(SHIFTED))
    assert forecaster.forecast(feed(forecaster, {0: 1.0, 2: 5.0}), 4).item() == 5.0
    history = feed(forecaster, {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0})
    assert len(history.values) == 3 and history.times[-1] == pytest.approx(2 * (SHIFTED[4] - 0.3) / 0.7 - 1)


# -- on pipelines ----------------------------------------------------------------------------


def run_with(pipe, run, *overrides):
    handle = dit_engine.apply(pipe, *overrides)
    try:
        return run(), handle.summary()
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def tiny_reference(tiny_pipe):
    return run_tiny(tiny_pipe)


@pytest.fixture(scope="module")
def tiny_reuse_psnr(tiny_pipe, tiny_reference):
    """PSNR of step-level caching without a calibrator (reuse of the last output): 34.9 dB."""
    return psnr(tiny_reference, run_with(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static")[0])


@pytest.mark.parametrize("calibrator,floor", [("foca", 45.5), ("hicache", 45.5), ("spectrum", 50.0)])  # measured 47.0, 46.9, 52.0
def test_step_level_forecasting_on_the_tiny_model(tiny_pipe, tiny_reference, tiny_reuse_psnr, calibrator, floor):
    output, summary = run_with(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static", f"calibrator={calibrator}")
    assert summary["steps_cached"] > 0.6 * summary["steps_total"]
    assert psnr(tiny_reference, output) > max(floor, tiny_reuse_psnr + 8)


def test_foca_corrector_beats_linear_extrapolation(tiny_pipe, tiny_reference):
    mask = "cache.mask=1110000010000100000100001000"  # 7 of 28 steps: long skips, where the corrector pays
    linear, _ = run_with(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static", mask, "calibrator=taylorseer")
    foca, _ = run_with(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static", mask, "calibrator=foca")
    assert psnr(tiny_reference, foca) > psnr(tiny_reference, linear) + 0.25  # measured 41.6 vs 41.1


@pytest.mark.parametrize("calibrator,floor", [("foca", 42.5), ("hicache", 41.5), ("spectrum", 42.0)])  # measured 44.3, 43.0, 43.8
def test_forecasters_compose_with_dbcache(tiny_pipe, tiny_reference, calibrator, floor):
    output, summary = run_with(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=dbcache", f"calibrator={calibrator}")
    assert summary["blocks_computed"] < summary["blocks_total"]
    assert psnr(tiny_reference, output) > floor
    exact, summary = run_with(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=dbcache", "cache.threshold=0", f"calibrator={calibrator}")
    assert torch.equal(exact, tiny_reference) and summary["steps_cached"] == 0


@pytest.mark.parametrize("calibrator", ["foca", "hicache", "spectrum"])
def test_forecasters_on_tiny_flux(tiny_flux, calibrator):
    def run():
        return tiny_flux(**tiny_flux_call_kwargs()).images

    reference = run()
    output, summary = run_with(tiny_flux, run, "cache=scm_static", f"calibrator={calibrator}")
    assert summary["steps_cached"] > 0 and psnr(reference, output) > 45.5  # measured 47.1 (foca), 46.9 (hicache), 48.2 (spectrum)
    # threshold 0.5: the random-weight model's steps differ too much to cache at the default
    output, summary = run_with(tiny_flux, run, "cache=dbcache", "cache.threshold=0.5", f"calibrator={calibrator}")
    assert summary["steps_cached"] > 0 and psnr(reference, output) > 45.5  # measured 47.5, 47.3, 46.5
    assert torch.equal(run(), reference)  # remove() restores the plain pipeline
