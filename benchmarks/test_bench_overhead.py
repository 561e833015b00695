"""The cost of doing nothing: plain diffusers vs ``cache=none`` and every cache that cannot cache
(threshold 0, budget 1), interleaved, on the embedded model and on tiny FLUX.

    python -m pytest benchmarks/test_bench_overhead.py -p no:cacheprovider

Each variant is applied to the same pipeline for its timed call and removed after it, so every
variant runs on the same modules; rounds alternate their order and a ratio is the median of the
per-round pairs plain / variant (the table adds the ratio of the fastest rounds, "best-of", which
noise cannot inflate). Every variant's images must equal plain diffusers' bit for bit.
Targets: ``cache=none`` >= 0.99 of plain, every cache at threshold 0 >= 0.98. The table prints at
the end of the session; measured on a busy machine it is marked UNTRUSTED and the targets are
not checked (skipped, not passed).
"""

from __future__ import annotations

import pytest
import torch

import dit_engine
from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs
from dit_engine.digits import CLASS_NAMES, load_digits_pipeline
from interleave import TABLES, contention, interleaved, seconds_of

ROUNDS = int(__import__("os").environ.get("BENCH_ROUNDS", "15"))
NOTHING = {
    "cache=none": ("cache=none",),
    "dbcache threshold 0": ("cache=dbcache", "cache.threshold=0"),
    "fbcache threshold 0": ("cache=fbcache", "cache.threshold=0"),
    "dbprune threshold 0": ("cache=dbprune", "cache.threshold=0"),
    "teacache threshold 0": ("cache=teacache", "cache.threshold=0"),
    "magcache threshold 0": ("cache=magcache", "cache.threshold=0"),
    "seacache threshold 0": ("cache=seacache", "cache.threshold=0"),
    "scm threshold 0": ("cache=scm", "cache.threshold=0"),
    "scm_static budget 1": ("cache=scm_static", "cache.budget=1.0"),
    "scm_adaptive budget 1": ("cache=scm_adaptive", "cache.budget=1.0"),
}


def _tiny():
    pipe = load_digits_pipeline()

    def call():
        generators = [torch.Generator().manual_seed(i) for i in range(len(CLASS_NAMES))]
        return pipe(prompt=list(CLASS_NAMES), num_inference_steps=28, generator=generators, output_type="pt").images

    return pipe, call


def _tiny_flux():
    pipe = build_tiny_flux_pipeline()

    def call():
        return pipe(**tiny_flux_call_kwargs(prompt=["a red fox", "a blue bird"], num_inference_steps=28)).images

    return pipe, call


MODELS = {"tiny": _tiny, "tiny_flux": _tiny_flux}


@pytest.mark.parametrize("model", list(MODELS))
def test_the_cost_of_doing_nothing(benchmark, model):
    pipe, call = MODELS[model]()
    pipe.set_progress_bar_config(disable=True)
    reference = call()

    def plain() -> float:
        return seconds_of(call)

    def variant(overrides):
        def run() -> float:
            handle = dit_engine.apply(pipe, *overrides)
            try:
                return seconds_of(call)
            finally:
                handle.remove()
        return run

    for label, overrides in NOTHING.items():  # identical outputs first: a fast wrong answer is no answer
        handle = dit_engine.apply(pipe, *overrides)
        try:
            assert torch.equal(call(), reference), f"{label} changed the output"
        finally:
            handle.remove()
    runners = {"plain": plain, **{label: variant(overrides) for label, overrides in NOTHING.items()}}
    timings = benchmark.pedantic(interleaved, args=(runners, ROUNDS), rounds=1, iterations=1)
    untrusted = contention(timings, "plain")
    lines = [f"the cost of doing nothing on {model} ({ROUNDS} interleaved rounds; ratio = plain / variant, "
             f"median of per-round pairs){'  UNTRUSTED: ' + untrusted if untrusted else ''}",
             f"{'variant':28} {'median s':>9} {'ratio':>7} {'target':>7} {'best-of':>8}"]
    ratios = {}
    for label in runners:
        ratio = timings.ratio("plain", label)
        target = 0.99 if label == "cache=none" else 0.98
        ratios[label] = (ratio, target)
        benchmark.extra_info[f"{label} ratio"] = ratio
        lines.append(f"{label:28} {timings.median(label):9.4f} {ratio:7.3f} {'' if label == 'plain' else f'>={target}':>7} "
                     f"{timings.best_ratio('plain', label):8.3f}")
    TABLES.append("\n".join(lines))
    if untrusted:
        pytest.skip(f"UNTRUSTED timings, targets not checked: {untrusted}")
    missed = [f"{label} {ratio:.3f} < {target}" for label, (ratio, target) in ratios.items() if label != "plain" and ratio < target]
    assert not missed, "; ".join(missed)


@pytest.mark.parametrize("model", list(MODELS))
def test_the_cost_of_the_nan_watch(benchmark, model):
    """Every engine pipeline call runs inside a FiniteWatch (NaN / Inf is never a success): a
    forward hook per transformer call and a wrapped VAE decode. Target: >= 0.99 of plain."""
    from dit_engine.finite import FiniteWatch

    pipe, call = MODELS[model]()
    pipe.set_progress_bar_config(disable=True)

    def watched() -> float:
        def run():
            with FiniteWatch(pipe, {"transformer": pipe.transformer}, 1.0) as watch:
                out = call()
            watch.check()
            return out
        return seconds_of(run)

    timings = benchmark.pedantic(interleaved, args=({"plain": lambda: seconds_of(call), "watched": watched}, ROUNDS),
                                 rounds=1, iterations=1)
    untrusted = contention(timings, "plain")
    ratio = timings.ratio("plain", "watched")
    benchmark.extra_info["watched ratio"] = ratio
    TABLES.append(f"the NaN watch on {model} ({ROUNDS} interleaved rounds): plain {timings.median('plain'):.4f} s, "
                  f"watched {timings.median('watched'):.4f} s, ratio {ratio:.3f} (target >= 0.99), best-of "
                  f"{timings.best_ratio('plain', 'watched'):.3f}{'  UNTRUSTED: ' + untrusted if untrusted else ''}")
    if untrusted:
        pytest.skip(f"UNTRUSTED timings, target not checked: {untrusted}")
    assert ratio >= 0.99, f"the NaN watch costs {1 - ratio:.1%} of a call"
