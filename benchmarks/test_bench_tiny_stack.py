"""Eager vs regional compile vs int8 vs compile + cache on the embedded model (CPU), side by side.

    python -m pytest benchmarks/test_bench_tiny_stack.py -p no:cacheprovider -s

Every variant gets a freshly loaded pipeline (quantization and compilation cannot be removed),
is warmed up (compilation happens there) and timed over the same 10 images x 28 steps; the last
test prints each median as a speedup over eager next to the PSNR against eager's images and the
compute fraction (docs/performance.md holds the table of a quiet run).
"""

from __future__ import annotations

import math

import pytest
import torch

import dit_engine
from dit_engine.tiny import CLASS_NAMES, load_tiny_pipeline

ROUNDS = 8
VARIANTS = {
    "eager": (),
    "compile": ("compile=regional",),
    "int8_weight_only": ("quant=int8_weight_only",),
    "int8_dynamic": ("quant=int8_dynamic",),
    "compile+dbcache": ("compile=regional", "cache=dbcache"),
    "compile+int8_dynamic+dbcache": ("compile=regional", "quant=int8_dynamic", "cache=dbcache"),
    "compile+step_forecast": ("compile=regional", "cache=scm_static", "calibrator=taylorseer"),
}
RESULTS: dict[str, dict] = {}


def generate(pipe) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(i) for i in range(len(CLASS_NAMES))]
    return pipe(prompt=list(CLASS_NAMES), num_inference_steps=28, generator=generators, output_type="pt").images


@pytest.mark.parametrize("label", list(VARIANTS))
def test_variant(benchmark, label):
    pipe = load_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    handle = dit_engine.apply(pipe, *VARIANTS[label]) if VARIANTS[label] else None
    images = benchmark.pedantic(generate, args=(pipe,), rounds=ROUNDS, warmup_rounds=2, iterations=1)
    RESULTS[label] = {"median": benchmark.stats.stats.median, "images": images,
                      "fraction": handle.summary()["compute_fraction"] if handle else 1.0, "extra_info": benchmark.extra_info}


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = torch.mean((reference - other) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_report():
    if len(RESULTS) < len(VARIANTS):
        pytest.skip("run the whole file: the ratios need every variant")
    eager = RESULTS["eager"]
    print(f"\n{'variant':32} {'median s':>9} {'speedup':>8} {'PSNR dB':>8} {'compute':>8}")
    for label, result in RESULTS.items():
        speedup = eager["median"] / result["median"]
        quality = psnr(eager["images"], result["images"])
        result["extra_info"].update(speedup_vs_eager=speedup, psnr_vs_eager=quality, compute_fraction=result["fraction"])
        print(f"{label:32} {result['median']:9.3f} {speedup:8.2f} {quality:8.1f} {100 * result['fraction']:7.1f}%")
    # compile must not change the images beyond float reordering
    assert psnr(eager["images"], RESULTS["compile"]["images"]) > 60
