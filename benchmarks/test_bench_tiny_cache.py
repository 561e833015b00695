"""Plain diffusers vs dit_engine's caches on the embedded model and on tiny FLUX, side by side.

    python -m pytest benchmarks/test_bench_tiny_cache.py -p no:cacheprovider
    python -m pytest benchmarks -p no:cacheprovider --benchmark-autosave   # keep the numbers (extra_info)

One pipeline per model (embedded: 10 images x 28 steps; tiny FLUX: 2 images x 28 steps); each
variant is applied for its timed call and removed after it. The clock is the process's own CPU
time on one thread, the variants interleaved and rounds added until every speedup's 95 % interval
is within ±2 % (benchmarks/interleave.py). The table (speedup [interval], wall speedup, PSNR of
the outputs vs the uncached ones (float outputs, before 8-bit quantisation), compute fraction,
ideal 1 / compute, attainable speedup and the share of it reached) prints at the end of the
session and goes into the benchmark's ``extra_info``.

Targets: ``cache=none`` identical; DBCache at its default threshold >= 30 dB (embedded model) and
1.5x faster; TaylorSeer raising PSNR at the same compute fraction; and (issue 15) at each of the
docs' step-forecast budgets (0.25, 0.18, 0.11) a speedup >= 0.95 of the *attainable* one; a speed
target fails when its whole interval lies below it (``interleave.verdict``).

Ideal and attainable: the ideal speedup is 1 / compute, but what a cache skips is only part of a
call: block caches skip blocks, step-level caches (``scm*``) whole transformer calls; the
embeddings, output layer, scheduler, VAE and the pipeline's Python run on every step. Their shares
of a plain call are measured in the same run on the same clock (``interleave.time_shares``), and
the attainable speedup is Amdahl's ``1 / (1 - share + compute * share)``.
"""

from __future__ import annotations

import math

import pytest
import torch

import dit_engine
from dit_engine.digits import CLASS_NAMES, load_digits_pipeline
from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs
from interleave import TABLES, distrust, interleaved, is_model_level, planned, precision_note, time_shares, timing, verdict

#: the step-forecast budgets docs/caches.md reports, each with the calibrator it reports there
STEP_FORECASTS = {
    "step forecast budget 0.25 (FoCa)": ("+method=step_foca_ultra",),
    "step forecast budget 0.18 (FoCa)": ("+method=step_foca_ultra", "cache.budget=0.18"),
    "step forecast budget 0.11 (TaylorSeer)": ("+method=step_forecast_ultra", "cache.budget=0.11"),
}
VARIANTS = {
    "none": ("cache=none",),
    "dbcache": ("cache=dbcache",),
    "dbcache+taylorseer": ("cache=dbcache", "calibrator=taylorseer"),
    "fbcache": ("cache=fbcache",),
    "dbprune": ("cache=dbprune",),
    "teacache": ("cache=teacache",),
    "magcache": ("cache=magcache",),
    "seacache": ("cache=seacache",),
    "scm_static": ("cache=scm_static",),
    "scm_static+taylorseer": ("cache=scm_static", "calibrator=taylorseer"),
    "scm_adaptive+foca budget 0.18": ("+method=step_adaptive_foca", "cache.budget=0.18"),
    **STEP_FORECASTS,
}
#: the share of the attainable speedup every step-forecast budget must reach
OF_ATTAINABLE = 0.95


def _embedded():
    pipe = load_digits_pipeline()

    def call() -> torch.Tensor:
        generators = [torch.Generator().manual_seed(i) for i in range(len(CLASS_NAMES))]
        return pipe(prompt=list(CLASS_NAMES), num_inference_steps=28, generator=generators, output_type="pt").images

    return pipe, call


def _tiny_flux():
    pipe = build_tiny_flux_pipeline()

    def call() -> torch.Tensor:
        return pipe(**tiny_flux_call_kwargs(prompt=["a red fox", "a blue bird"], num_inference_steps=28)).images

    return pipe, call


MODELS = {"embedded": _embedded, "tiny_flux": _tiny_flux}


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """PSNR over the reference's range (images in [0, 1]: peak 1)."""
    peak = max(float(reference.abs().max()), 1e-12)
    mse = torch.mean((reference.float() - other.float()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@pytest.mark.parametrize("model", list(MODELS))
def test_caches_vs_plain_diffusers(benchmark, model):
    pipe, call = MODELS[model]()
    pipe.set_progress_bar_config(disable=True)
    reference = call()
    quality, model_level = {}, {}
    for label, overrides in VARIANTS.items():  # outputs and compute fraction, untimed
        handle = dit_engine.apply(pipe, *overrides)
        try:
            quality[label] = (psnr(reference, call()), handle.summary()["compute_fraction"])
            model_level[label] = is_model_level(handle)
            adapter = handle.plan.adapter
        finally:
            handle.remove()

    runners = {"plain": timing(call), **{label: planned(pipe, call, o) for label, o in VARIANTS.items()}}
    timings = benchmark.pedantic(interleaved, args=(runners,), rounds=1, iterations=1)
    shares = time_shares(pipe, adapter, call, timings.clock)
    untrusted = distrust(timings)
    rows = {}
    lines = [f"caches vs plain diffusers on {model}, 28 steps{'  UNTRUSTED: ' + untrusted if untrusted else ''}",
             timings.heading(), precision_note(timings),
             f"plain call: {shares.transformer:.1%} in the transformer, {shares.blocks:.1%} in the block stacks (same clock)",
             f"{'variant':40} {'speedup [95 % interval]':>24} {'wall':>6} {'PSNR dB':>8} {'compute':>8} {'ideal':>6} "
             f"{'attainable':>10} {'of attainable [95 %]':>21}"]
    for label in VARIANTS:
        low, speedup, high = timings.interval(label)
        db, fraction = quality[label]
        attainable = shares.attainable(fraction, model_level[label])
        rows[label] = (speedup, db, fraction, (low / attainable, speedup / attainable, high / attainable))
        benchmark.extra_info[label] = {"speedup": speedup, "interval": [low, high], "wall_speedup": timings.wall_ratio(label),
                                       "psnr_db": db, "compute_fraction": fraction, "ideal": 1 / fraction,
                                       "attainable": attainable, "of_attainable": speedup / attainable}
        lines.append(f"{label:40} {timings.cell(label):>24} {timings.wall_ratio(label):6.2f} {db:8.2f} {fraction:8.3f} "
                     f"{1 / fraction:6.2f} {attainable:10.2f} {speedup / attainable:6.2f} [{low / attainable:.2f}, {high / attainable:.2f}]"
                     + (f" {verdict(rows[label][3], OF_ATTAINABLE)}" if label in STEP_FORECASTS else ""))
    TABLES.append("\n".join(lines))
    assert rows["none"][1] == math.inf, "cache=none must not change the output"
    if model == "embedded":
        assert rows["dbcache"][1] >= 30.0
    for cache in ("dbcache", "scm_static"):
        calibrated = rows[f"{cache}+taylorseer"]
        assert calibrated[2] == rows[cache][2], f"TaylorSeer changed {cache}'s compute"
        if calibrated[2] < 1:  # (tiny FLUX's random weights move too much for DBCache's default threshold to cache)
            assert calibrated[1] > rows[cache][1], f"TaylorSeer must raise PSNR on {cache}"
    if untrusted:
        pytest.skip(f"UNTRUSTED timings, speed targets not checked: {untrusted}")
    if model == "embedded":
        assert verdict(timings.interval("dbcache"), 1.5) != "MISSED", f"dbcache {timings.cell('dbcache')} < 1.5x"
    below = [f"{label} {rows[label][3][1]:.3f} [{rows[label][3][0]:.3f}, {rows[label][3][2]:.3f}]" for label in STEP_FORECASTS
             if verdict(rows[label][3], OF_ATTAINABLE) == "MISSED"]
    assert not below, f"below {OF_ATTAINABLE} of the attainable speedup: {', '.join(below)}"
