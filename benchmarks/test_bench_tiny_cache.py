"""Plain diffusers vs dit_engine's cache methods on the embedded tiny model, side by side.

Run (and save a baseline to compare later runs with ``--benchmark-compare``)::

    python -m pytest benchmarks -p no:cacheprovider --benchmark-autosave
    python -m pytest benchmarks --benchmark-compare

Every variant runs in one session on one pipeline (10 images, 28 steps); the last test turns the
medians into speedups vs plain diffusers, prints them next to the PSNR of each variant's images vs
the uncached ones (float outputs, before 8-bit quantisation) and the compute fraction, stores them
in each benchmark's ``extra_info`` and checks the targets: ``cache=none`` within 2 % of plain
diffusers and identical; DBCache at its default threshold at least 1.5x faster with PSNR >= 30 dB;
the TaylorSeer calibrator raising PSNR at the same compute fraction.
"""

from __future__ import annotations

import math

import pytest
import torch

import dit_engine
from dit_engine.tiny import CLASS_NAMES, load_tiny_pipeline

ROUNDS = 12
VARIANTS = {
    "none": ("cache=none",),
    "dbcache": ("cache=dbcache",),
    "dbcache+taylorseer": ("cache=dbcache", "calibrator=taylorseer"),
    "fbcache": ("cache=fbcache",),
    "dbcache_fast": ("cache=dbcache_fast",),
    "dbcache_slow": ("cache=dbcache_slow",),
    "scm": ("cache=scm",),
    "scm_static": ("cache=scm_static",),
    "scm_static+taylorseer": ("cache=scm_static", "calibrator=taylorseer"),
}
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def pipe():
    pipe = load_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(i) for i in range(len(CLASS_NAMES))]
    return pipe(prompt=list(CLASS_NAMES), num_inference_steps=28, generator=generators, output_type="pt").images


def measure(benchmark, pipe, label: str, overrides: tuple[str, ...] | None) -> None:
    handle = dit_engine.apply(pipe, *overrides) if overrides is not None else None
    try:
        images = benchmark.pedantic(generate, args=(pipe,), rounds=ROUNDS, warmup_rounds=2, iterations=1)
        summary = handle.summary() if handle else None
    finally:
        if handle:
            handle.remove()
    RESULTS[label] = {
        "median": benchmark.stats.stats.median,
        "images": images,
        "summary": summary,
        "extra_info": benchmark.extra_info,  # filled with the ratios below, saved with --benchmark-autosave
    }


def test_plain_diffusers(benchmark, pipe):
    measure(benchmark, pipe, "plain", None)


@pytest.mark.parametrize("label", list(VARIANTS))
def test_dit_engine(benchmark, pipe, label):
    measure(benchmark, pipe, label, VARIANTS[label])


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = torch.mean((reference - other) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_ratios_and_targets():
    if set(RESULTS) != {"plain", *VARIANTS}:
        pytest.skip("needs the benchmarks above in the same session (not run with --benchmark-skip)")
    plain = RESULTS["plain"]
    rows = {}
    for label in VARIANTS:
        result = RESULTS[label]
        speedup = plain["median"] / result["median"]
        quality = psnr(plain["images"], result["images"])
        fraction = result["summary"]["compute_fraction"]
        ideal = 1 / fraction
        rows[label] = (speedup, quality, fraction)
        result["extra_info"].update(speedup_vs_plain=speedup, psnr_db=quality, compute_fraction=fraction,
                                    speedup_vs_ideal=speedup / ideal)
    print("\nvariant                 speedup vs plain   PSNR vs uncached   compute fraction   speedup / ideal")
    for label, (speedup, quality, fraction) in rows.items():
        print(f"{label:<23} {speedup:>8.2f}x {quality:>17.2f} dB {fraction:>17.3f} {speedup * fraction:>16.2f}")
    assert rows["none"][0] >= 0.98, "cache=none must stay within 2 % of plain diffusers"
    assert rows["none"][1] == math.inf, "cache=none must not change the output"
    assert rows["dbcache"][0] >= 1.5 and rows["dbcache"][1] >= 30.0
    for cache in ("dbcache", "scm_static"):
        calibrated = rows[f"{cache}+taylorseer"]
        assert calibrated[2] == rows[cache][2] and calibrated[1] > rows[cache][1], f"TaylorSeer must raise PSNR on {cache}"
