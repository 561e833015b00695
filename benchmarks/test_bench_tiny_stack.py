"""Eager vs regional compile vs int8 vs compile + cache on the embedded model (CPU), side by side.

    python -m pytest benchmarks/test_bench_tiny_stack.py -p no:cacheprovider -s

Every variant gets a freshly loaded pipeline (quantization and compilation cannot be removed), is
warmed up (compilation happens there) and timed over the same 10 images x 28 steps, interleaved
with the others on the process's CPU time, one thread (a speedup is the median of the per-round
ratios eager / variant, with its 95 % interval; rounds are added until it is within ±2 %,
benchmarks/interleave.py); the table (speedup over eager, wall speedup, PSNR against eager's
images, compute fraction) prints at the end of the session (docs/performance.md holds a run's table).
"""

from __future__ import annotations

import math

import torch

import dit_engine
from dit_engine.digits import CLASS_NAMES, load_digits_pipeline
from interleave import TABLES, interleaved, precision_note, timing
VARIANTS = {
    "eager": (),
    "compile": ("compile=regional",),
    "int8_weight_only": ("quant=int8_weight_only",),
    "int8_dynamic": ("quant=int8_dynamic",),
    "compile+dbcache": ("compile=regional", "cache=dbcache"),
    "compile+int8_dynamic+dbcache": ("compile=regional", "quant=int8_dynamic", "cache=dbcache"),
    "compile+step_forecast": ("compile=regional", "cache=scm_static", "calibrator=taylorseer"),
}


def generate(pipe) -> torch.Tensor:
    generators = [torch.Generator().manual_seed(i) for i in range(len(CLASS_NAMES))]
    return pipe(prompt=list(CLASS_NAMES), num_inference_steps=28, generator=generators, output_type="pt").images


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    mse = torch.mean((reference - other) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_stack(benchmark):
    pipes, handles, images = {}, {}, {}
    for label, overrides in VARIANTS.items():  # quantization and compilation cannot be removed: a pipeline each
        pipe = load_digits_pipeline()
        pipe.set_progress_bar_config(disable=True)
        handles[label] = dit_engine.apply(pipe, *overrides) if overrides else None
        pipes[label] = pipe
    runners = {label: timing(lambda pipe=pipe: generate(pipe)) for label, pipe in pipes.items()}
    timings = benchmark.pedantic(interleaved, args=(runners,), kwargs={"warmup": 2}, rounds=1, iterations=1)
    for label, pipe in pipes.items():
        images[label] = generate(pipe)
    lines = [f"eager vs compile / int8 / cache on the embedded model, 10 images x 28 steps", timings.heading(),
             precision_note(timings),
             f"{'variant':32} {'clock s':>8} {'wall s':>7} {'speedup [95 % interval]':>24} {'wall':>6} {'PSNR dB':>8} {'compute':>8}"]
    for label in VARIANTS:
        speedup = timings.ratio(label)
        quality = psnr(images["eager"], images[label])
        fraction = handles[label].summary()["compute_fraction"] if handles[label] else 1.0
        benchmark.extra_info[label] = {"speedup_vs_eager": speedup, "interval": timings.interval(label),
                                       "psnr_vs_eager": quality, "compute_fraction": fraction}
        lines.append(f"{label:32} {timings.median(label):8.3f} {timings.wall_median(label):7.3f} {timings.cell(label):>24} "
                     f"{timings.wall_ratio(label):6.2f} {quality:8.1f} {100 * fraction:7.1f}%")
    TABLES.append("\n".join(lines))
    # compile must not change the images beyond float reordering
    assert psnr(images["eager"], images["compile"]) > 60
