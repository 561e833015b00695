"""Plain diffusers vs ``cache=none`` vs ``cache=dbcache`` on the embedded tiny model.

Run (and save a baseline to compare later runs with ``--benchmark-compare``)::

    python -m pytest benchmarks -p no:cacheprovider --benchmark-autosave
    python -m pytest benchmarks --benchmark-compare

The three variants run in this order in one session on one pipeline; the last test turns their
medians into ratios, prints them with the PSNR of the cached images vs the uncached ones, and
checks the targets: ``cache=none`` within 2 % of plain diffusers, DBCache at its default threshold
at least 1.5x faster with PSNR >= 30 dB.
"""

from __future__ import annotations

import math

import pytest
import torch

import dit_engine
from dit_engine.tiny import CLASS_NAMES, load_tiny_pipeline

ROUNDS = 15
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def pipe():
    pipe = load_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(i) for i in range(len(CLASS_NAMES))]
    return pipe(prompt=list(CLASS_NAMES), num_inference_steps=28, generator=generators, output_type="pt").images


def measure(benchmark, pipe, label: str, *overrides: str | None) -> None:
    handle = dit_engine.apply(pipe, *overrides) if overrides != (None,) else None
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


def test_cache_none(benchmark, pipe):
    measure(benchmark, pipe, "none", "cache=none")


def test_dbcache_default(benchmark, pipe):
    measure(benchmark, pipe, "dbcache", "cache=dbcache")


def test_fbcache_default(benchmark, pipe):
    measure(benchmark, pipe, "fbcache", "cache=fbcache")


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = torch.mean((reference - other) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_ratios_and_targets():
    if set(RESULTS) != {"plain", "none", "dbcache", "fbcache"}:
        pytest.skip("needs the benchmarks above in the same session (not run with --benchmark-skip)")
    plain = RESULTS["plain"]
    rows = []
    for label in ("none", "dbcache", "fbcache"):
        result = RESULTS[label]
        speedup = plain["median"] / result["median"]
        quality = psnr(plain["images"], result["images"])
        fraction = result["summary"]["compute_fraction"]
        rows.append((label, speedup, quality, fraction))
        result["extra_info"].update(speedup_vs_plain=speedup, psnr_db=quality, compute_fraction=fraction)
    print("\nvariant   speedup vs plain diffusers   PSNR vs uncached   compute fraction")
    for label, speedup, quality, fraction in rows:
        print(f"{label:<9} {speedup:>8.3f}x {quality:>24.2f} dB {fraction:>14.3f}")
    by_label = {label: (speedup, quality) for label, speedup, quality, _ in rows}
    assert by_label["none"][0] >= 0.98, "cache=none must stay within 2 % of plain diffusers"
    assert by_label["none"][1] == math.inf, "cache=none must not change the output"
    assert by_label["dbcache"][0] >= 1.5 and by_label["dbcache"][1] >= 30.0
