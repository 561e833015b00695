"""Interleaved timing for the benchmarks: every variant runs once per round, rounds alternate the
order, and a ratio is the median of per-round pairs, so slow drift (thermal, a background job
starting) hits every variant alike instead of whichever ran last.

A result measured under load is not a result: :func:`contention` says why a run cannot be
trusted (other processes took CPU time while it ran, or the reference timings scattered), and the
benchmarks print the table marked UNTRUSTED and skip their speed checks instead of passing them.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: The share of the machine's CPU time that other processes may take during a measurement
#: (``/proc/stat`` busy time minus this process's own) before its ratios stop being results.
MAX_OTHERS = 0.10
#: The interquartile range of the reference timings, relative to their median, above which the
#: timings scattered too much for a ratio of a few per cent to mean anything.
MAX_SPREAD = 0.06


def _machine_busy() -> float | None:
    """CPU seconds all processes have run (``/proc/stat``), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Timings:
    """Seconds per round for every variant, in the order they were added."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    #: the share of the machine's CPU other processes took while the rounds ran (None: unknown)
    others: float | None = None

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, reference: str, name: str) -> float:
        """Median over rounds of reference time / variant time (> 1: the variant is faster)."""
        return statistics.median(a / b for a, b in zip(self.seconds[reference], self.seconds[name]))

    def best_ratio(self, reference: str, name: str) -> float:
        """Fastest reference round / fastest variant round: interference only ever adds time, so on
        a noisy machine the minima are the steadier estimate of what the code itself costs (the
        median of pairs stays the result; this is printed beside it)."""
        return min(self.seconds[reference]) / min(self.seconds[name])

    def spread(self, name: str) -> float:
        """Interquartile range of ``name``'s timings over their median."""
        values = self.seconds[name]
        if len(values) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(values, n=4)
        return (q3 - q1) / statistics.median(values)


def interleaved(runners: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> Timings:
    """Run every runner ``rounds`` times, interleaved (odd rounds in reverse order); each runner
    returns the seconds of its timed part (set-up such as applying a plan stays outside)."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    timings = Timings({name: [] for name in runners})
    busy, own, start = _machine_busy(), _own_cpu(), time.perf_counter()
    names = list(runners)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            timings.seconds[name].append(runners[name]())
    if busy is not None:
        elapsed = (time.perf_counter() - start) * (os.cpu_count() or 1)
        timings.others = max(0.0, (_machine_busy() - busy) - (_own_cpu() - own)) / elapsed
    return timings


def seconds_of(call: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def contention(timings: Timings, reference: str) -> str | None:
    """Why these timings cannot be trusted, or None."""
    if timings.others is not None and timings.others > MAX_OTHERS:
        return f"other processes took {timings.others:.0%} of the machine's CPU while it ran (> {MAX_OTHERS:.0%})"
    spread = timings.spread(reference)
    if spread > MAX_SPREAD:
        return f"the {reference} timings scattered (interquartile range {spread:.1%} of the median > {MAX_SPREAD:.0%})"
    return None


#: Tables the benchmarks print at the end of the session (benchmarks/conftest.py), pass or fail.
TABLES: list[str] = []


@dataclass
class Shares:
    """Where a plain call's time goes: the share inside the transformer calls and the share inside
    the block stacks (first block entered to last block left), measured with hooks on one
    untimed pass.

    A cache that skips blocks saves at most the block share; one that answers whole transformer
    calls (step-level) at most the transformer share. The rest (embeddings, output layer,
    scheduler, VAE, the pipeline's own Python) runs on every step whatever is cached, so the
    *attainable* speedup at compute fraction ``c`` is ``1 / (1 - share + c * share)`` (Amdahl),
    which is below the ideal ``1 / c`` by that fixed part.
    """

    transformer: float
    blocks: float

    def attainable(self, compute_fraction: float, model_level: bool) -> float:
        share = self.transformer if model_level else self.blocks
        return 1.0 / (1.0 - share + compute_fraction * share)


def time_shares(pipe, adapter, call: Callable[[], object], repeats: int = 3) -> Shares:
    """Measure :class:`Shares` of ``call`` on ``pipe`` (hooks are removed afterwards)."""
    spent = {"transformer": 0.0, "blocks": 0.0}
    started: dict[str, float] = {}
    handles = []

    def enter(key):
        return lambda *_args, **_kwargs: started.__setitem__(key, time.perf_counter())

    def leave(key, total):
        def hook(*_args, **_kwargs):
            spent[total] += time.perf_counter() - started[key]
        return hook

    for name, transformer in adapter.transformers(pipe).items():
        handles.append(transformer.register_forward_pre_hook(enter(name)))
        handles.append(transformer.register_forward_hook(leave(name, "transformer")))
        for spec, blocks in adapter.block_lists(transformer):
            key = f"{name}.{spec.path}"
            handles.append(blocks[0].register_forward_pre_hook(enter(key)))
            handles.append(blocks[-1].register_forward_hook(leave(key, "blocks")))
    try:
        call()  # warm-up
        spent.update(transformer=0.0, blocks=0.0)
        total = sum(seconds_of(call) for _ in range(repeats))
    finally:
        for handle in handles:
            handle.remove()
    return Shares(transformer=spent["transformer"] / total, blocks=spent["blocks"] / total)


def is_model_level(handle) -> bool:
    """Whether an applied plan answers whole transformer calls on cached steps (step-level caches)."""
    return any(getattr(t, "model_level", lambda: False)() for t in handle.transforms)
