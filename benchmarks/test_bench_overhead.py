"""The cost of doing nothing: plain diffusers vs ``cache=none`` and every cache that cannot cache
(threshold 0, budget 1), interleaved, on the embedded model and on tiny FLUX.

    python -m pytest benchmarks/test_bench_overhead.py -p no:cacheprovider

Each variant is applied to the same pipeline for its timed call and removed after it, so every
variant runs on the same modules. The clock is the process's own CPU time on one thread
(benchmarks/interleave.py): rounds alternate their order, a ratio is the median of the per-round
pairs plain / variant with its 95 % interval, and rounds are added until every interval is within
±2 %. Every variant's images must equal plain diffusers' bit for bit.
Targets (issue 14): ``cache=none`` costs at most 1 % over plain (ratio >= 1 / 1.01), every cache
at threshold 0 / budget 1 at most 2 % (ratio >= 1 / 1.02); a target fails when the whole interval
lies below it (``interleave.verdict``). The table prints at the end of the
session; a table whose ratios did not settle is marked UNTRUSTED and its targets are skipped, not
passed; one that did not settle within ±2 % in the round limit says so and is checked at that
precision.

``test_the_clock_holds_with_a_busy_neighbour`` measures two ratios with the machine as it is and
again with a spinning process per core beside it, and checks the two agree within their intervals.
"""

from __future__ import annotations

import pytest
import torch

import dit_engine
from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs
from dit_engine.digits import CLASS_NAMES, load_digits_pipeline
from interleave import TABLES, busy_neighbour, distrust, interleaved, planned, precision_note, timing, verdict

#: most a variant may cost over plain diffusers: cache=none, and every cache that cannot cache
NONE_COST, NOTHING_COST = 1.01, 1.02
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


def _target(label: str) -> float:
    return 1 / (NONE_COST if label == "cache=none" else NOTHING_COST)


@pytest.mark.parametrize("model", list(MODELS))
def test_the_cost_of_doing_nothing(benchmark, model):
    pipe, call = MODELS[model]()
    pipe.set_progress_bar_config(disable=True)
    reference = call()
    for label, overrides in NOTHING.items():  # identical outputs first: a fast wrong answer is no answer
        handle = dit_engine.apply(pipe, *overrides)
        try:
            assert torch.equal(call(), reference), f"{label} changed the output"
        finally:
            handle.remove()
    runners = {"plain": timing(call), **{label: planned(pipe, call, overrides) for label, overrides in NOTHING.items()}}
    timings = benchmark.pedantic(interleaved, args=(runners,), rounds=1, iterations=1)
    untrusted = distrust(timings)
    lines = [f"the cost of doing nothing on {model}{'  UNTRUSTED: ' + untrusted if untrusted else ''}", timings.heading(),
             precision_note(timings),
             f"{'variant':24} {'clock s':>8} {'wall s':>8} {'ratio [95 % interval]':>24} {'target':>8} {'verdict':>12} "
             f"{'wall ratio':>10}"]
    for label in runners:
        target = "" if label == "plain" else f">={_target(label):.3f}"
        judged = "" if label == "plain" else verdict(timings.interval(label), _target(label))
        benchmark.extra_info[f"{label} ratio"] = timings.interval(label)
        lines.append(f"{label:24} {timings.median(label):8.4f} {timings.wall_median(label):8.4f} {timings.cell(label):>24} "
                     f"{target:>8} {judged:>12} {timings.wall_ratio(label):10.3f}")
    TABLES.append("\n".join(lines))
    if untrusted:
        pytest.skip(f"UNTRUSTED timings, targets not checked: {untrusted}")
    missed = [f"{label} {timings.cell(label)} < {_target(label):.3f}" for label in NOTHING
              if verdict(timings.interval(label), _target(label)) == "MISSED"]
    assert not missed, "; ".join(missed)


@pytest.mark.parametrize("model", list(MODELS))
def test_the_cost_of_the_nan_watch(benchmark, model):
    """Every engine pipeline call runs inside a FiniteWatch (NaN / Inf is never a success): a
    forward hook per transformer call and a wrapped VAE decode. Target: at most 1 % over plain."""
    from dit_engine.finite import FiniteWatch

    pipe, call = MODELS[model]()
    pipe.set_progress_bar_config(disable=True)

    def watched():
        with FiniteWatch(pipe, {"transformer": pipe.transformer}, 1.0) as watch:
            out = call()
        watch.check()
        return out

    timings = benchmark.pedantic(interleaved, args=({"plain": timing(call), "watched": timing(watched)},),
                                 rounds=1, iterations=1)
    untrusted = distrust(timings)
    benchmark.extra_info["watched ratio"] = timings.interval("watched")
    TABLES.append(f"the NaN watch on {model}: plain {timings.median('plain'):.4f} s, watched {timings.median('watched'):.4f} s, "
                  f"ratio {timings.cell('watched')} (target >= {1 / NONE_COST:.3f}: {verdict(timings.interval('watched'), 1 / NONE_COST)})"
                  f"{'  UNTRUSTED: ' + untrusted if untrusted else ''}"
                  f"\n{timings.heading()}\n{precision_note(timings)}")
    if untrusted:
        pytest.skip(f"UNTRUSTED timings, target not checked: {untrusted}")
    assert verdict(timings.interval("watched"), 1 / NONE_COST) != "MISSED", \
        f"the NaN watch costs {1 - timings.ratio('watched'):.1%} of a call ({timings.cell('watched')})"


def _overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2]


def test_the_clock_holds_with_a_busy_neighbour(benchmark):
    """The same two ratios (``cache=none`` and ``cache=dbcache`` against plain, embedded model)
    measured with the machine as it is and with one spinning process per core beside it: on the
    CPU-time clock they must agree within their intervals (the wall ratios print beside)."""
    pipe, call = MODELS["tiny"]()
    pipe.set_progress_bar_config(disable=True)
    runners = {"plain": timing(call), "cache=none": planned(pipe, call, ("cache=none",)),
               "cache=dbcache": planned(pipe, call, ("cache=dbcache",))}

    def both():
        quiet = interleaved(runners)
        with busy_neighbour() as spinners:
            busy = interleaved(runners)
        return quiet, busy, spinners

    quiet, busy, spinners = benchmark.pedantic(both, rounds=1, iterations=1)
    lines = [f"the clock with and without a busy neighbour (embedded model; {spinners} spinning process(es) beside the busy run)",
             f"as it is: {quiet.heading()}", f"busy:      {busy.heading()}",
             f"{'variant':14} {'as it is [95 %]':>24} {'busy [95 %]':>24} {'agree':>6} {'wall: as it is':>15} {'busy':>6}"]
    disagree = []
    for label in ("cache=none", "cache=dbcache"):
        agree = _overlap(quiet.interval(label), busy.interval(label))
        if not agree:
            disagree.append(f"{label}: {quiet.cell(label)} vs {busy.cell(label)}")
        benchmark.extra_info[label] = {"as_it_is": quiet.interval(label), "busy": busy.interval(label)}
        lines.append(f"{label:14} {quiet.cell(label):>24} {busy.cell(label):>24} {'yes' if agree else 'NO':>6} "
                     f"{quiet.wall_ratio(label):15.3f} {busy.wall_ratio(label):6.3f}")
    lines += [f"as it is: {precision_note(quiet)}", f"busy:      {precision_note(busy)}"]
    TABLES.append("\n".join(lines))
    untrusted = distrust(quiet) or distrust(busy)
    if untrusted:
        pytest.skip(f"UNTRUSTED timings, agreement not checked: {untrusted}")
    assert not disagree, "the ratios moved with a busy neighbour: " + "; ".join(disagree)
