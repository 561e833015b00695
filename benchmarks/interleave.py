"""Interleaved timing for the benchmarks: every variant runs once per round, rounds alternate the
order, and a ratio is the median of per-round pairs, so slow drift (thermal, a background job
starting) hits every variant alike instead of whichever ran last.

A result measured under load is not a result: :func:`contention` says why a run cannot be
trusted (the machine was busy before it started, or the reference timings scattered), and the
benchmarks print the table marked UNTRUSTED and skip their speed checks instead of passing them.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: The 1-minute load average above which a benchmark does not start its measurement as trusted
#: (the machine has this many other runnable processes on average).
MAX_LOAD = 0.8
#: The interquartile range of the reference timings, relative to their median, above which the
#: timings scattered too much for a ratio of a few per cent to mean anything.
MAX_SPREAD = 0.06


@dataclass
class Timings:
    """Seconds per round for every variant, in the order they were added."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    load_before: float = 0.0
    load_after: float = 0.0

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, reference: str, name: str) -> float:
        """Median over rounds of reference time / variant time (> 1: the variant is faster)."""
        return statistics.median(a / b for a, b in zip(self.seconds[reference], self.seconds[name]))

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
    timings = Timings({name: [] for name in runners}, load_before=os.getloadavg()[0])
    names = list(runners)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            timings.seconds[name].append(runners[name]())
    timings.load_after = os.getloadavg()[0]
    return timings


def seconds_of(call: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def contention(timings: Timings, reference: str) -> str | None:
    """Why these timings cannot be trusted, or None."""
    if timings.load_before > MAX_LOAD:
        return f"the machine was busy before the measurement (1-min load average {timings.load_before:.2f} > {MAX_LOAD})"
    spread = timings.spread(reference)
    if spread > MAX_SPREAD:
        return f"the {reference} timings scattered (interquartile range {spread:.1%} of the median > {MAX_SPREAD:.0%})"
    return None


#: Tables the benchmarks print at the end of the session (benchmarks/conftest.py), pass or fail.
TABLES: list[str] = []
