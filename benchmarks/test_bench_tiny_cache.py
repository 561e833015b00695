"""Plain diffusers vs dit_engine's cache methods on the embedded tiny model, side by side.

    python -m pytest benchmarks/test_bench_tiny_cache.py -p no:cacheprovider
    python -m pytest benchmarks -p no:cacheprovider --benchmark-autosave   # keep the numbers (extra_info)

One pipeline (10 images, 28 steps); each variant is applied for its timed call and removed after
it, and the variants are timed interleaved (every round runs all of them, odd rounds in reverse
order; a speedup is the median of the per-round ratios plain / variant). The table (speedup, PSNR
of the images vs the uncached ones (float outputs, before 8-bit quantisation), compute fraction,
speedup over its ideal 1 / compute) prints at the end of the session and goes into the benchmark's
``extra_info``. Targets: ``cache=none`` identical and within 1 % of plain diffusers; DBCache at its
default threshold at least 1.5x faster with PSNR >= 30 dB; TaylorSeer raising PSNR at the same
compute fraction; every cache at >= 0.95 of its *attainable* speedup. On a busy machine the
table is marked UNTRUSTED and the speed targets are skipped, not passed.

Ideal and attainable: the ideal speedup is 1 / compute, but what a cache skips is only part of a
call: block caches skip blocks, step-level caches (``scm*``) whole transformer calls; the
embeddings, output layer, scheduler, VAE and the pipeline's Python run on every step. Their
shares of a plain call are measured in the same run (``interleave.time_shares``), and the
attainable speedup is Amdahl's ``1 / (1 - share + compute * share)``. Both columns print; the
target is on the attainable one (the fixed part caps "of ideal" below 0.95 at low compute on the
embedded model: about 1.3 % of a call is outside the transformer and 4 % more outside the blocks).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

import dit_engine
from dit_engine.digits import CLASS_NAMES, load_digits_pipeline
from interleave import TABLES, contention, interleaved, is_model_level, seconds_of, time_shares

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
VARIANTS = {
    "none": ("cache=none",),
    "dbcache": ("cache=dbcache",),
    "dbcache+taylorseer": ("cache=dbcache", "calibrator=taylorseer"),
    "fbcache": ("cache=fbcache",),
    "dbcache_fast": ("cache=dbcache_fast",),
    "dbcache_slow": ("cache=dbcache_slow",),
    "dbprune": ("cache=dbprune",),
    "teacache": ("cache=teacache",),
    "magcache": ("cache=magcache",),
    "seacache": ("cache=seacache",),
    "scm": ("cache=scm",),
    "scm_static": ("cache=scm_static",),
    "scm_static+taylorseer": ("cache=scm_static", "calibrator=taylorseer"),
    "scm_adaptive+taylorseer budget 0.2": ("cache=scm_adaptive", "calibrator=taylorseer", "cache.budget=0.2"),
    "+method=step_adaptive_foca budget 0.18": ("+method=step_adaptive_foca", "cache.budget=0.18"),
    "+method=step_forecast_ultra budget 0.11": ("+method=step_forecast_ultra", "cache.budget=0.11"),
}


def generate(pipe) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(i) for i in range(len(CLASS_NAMES))]
    return pipe(prompt=list(CLASS_NAMES), num_inference_steps=28, generator=generators, output_type="pt").images


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = torch.mean((reference - other) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_caches_vs_plain_diffusers(benchmark):
    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    reference = generate(pipe)
    quality, model_level = {}, {}
    for label, overrides in VARIANTS.items():  # images and compute fraction, untimed
        handle = dit_engine.apply(pipe, *overrides)
        try:
            quality[label] = (psnr(reference, generate(pipe)), handle.summary()["compute_fraction"])
            model_level[label] = is_model_level(handle)
            adapter = handle.plan.adapter
        finally:
            handle.remove()
    shares = time_shares(pipe, adapter, lambda: generate(pipe))

    def variant(overrides):
        def run() -> float:
            handle = dit_engine.apply(pipe, *overrides)
            try:
                return seconds_of(lambda: generate(pipe))
            finally:
                handle.remove()
        return run

    runners = {"plain": lambda: seconds_of(lambda: generate(pipe)), **{label: variant(o) for label, o in VARIANTS.items()}}
    timings = benchmark.pedantic(interleaved, args=(runners, ROUNDS), rounds=1, iterations=1)
    untrusted = contention(timings, "plain")
    rows = {}
    lines = [f"caches vs plain diffusers on the embedded model, 10 images x 28 steps ({ROUNDS} interleaved rounds)"
             f"{'  UNTRUSTED: ' + untrusted if untrusted else ''}",
             f"plain call: {shares.transformer:.1%} in the transformer, {shares.blocks:.1%} in the block stacks",
             f"{'variant':36} {'speedup':>8} {'PSNR dB':>8} {'compute':>8} {'of ideal':>9} {'of attainable':>14}"]
    for label in VARIANTS:
        speedup = timings.ratio("plain", label)
        db, fraction = quality[label]
        of_attainable = speedup / shares.attainable(fraction, model_level[label])
        rows[label] = (speedup, db, fraction, of_attainable)
        benchmark.extra_info[label] = {"speedup_vs_plain": speedup, "psnr_db": db, "compute_fraction": fraction,
                                       "speedup_vs_ideal": speedup * fraction, "speedup_vs_attainable": of_attainable}
        lines.append(f"{label:36} {speedup:7.2f}x {db:8.2f} {fraction:8.3f} {speedup * fraction:9.2f} {of_attainable:14.2f}")
    TABLES.append("\n".join(lines))
    assert rows["none"][1] == math.inf, "cache=none must not change the output"
    assert rows["dbcache"][1] >= 30.0
    for cache in ("dbcache", "scm_static"):
        calibrated = rows[f"{cache}+taylorseer"]
        assert calibrated[2] == rows[cache][2] and calibrated[1] > rows[cache][1], f"TaylorSeer must raise PSNR on {cache}"
    if untrusted:
        pytest.skip(f"UNTRUSTED timings, speed targets not checked: {untrusted}")
    assert rows["none"][0] >= 0.99, "cache=none must stay within 1 % of plain diffusers"
    assert rows["dbcache"][0] >= 1.5
    below = [f"{label} {share:.2f}" for label, (_, _, _, share) in rows.items() if label != "none" and share < 0.95]
    assert not below, f"below 0.95 of the attainable speedup: {', '.join(below)}"
