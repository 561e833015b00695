"""Clocks that hold on a shared machine, and the interval of a ratio measured with them.

Wall time on a CPU shared with other jobs scatters by tens of per cent: with two intra-op threads
on two busy cores, OpenMP threads spin waiting for each other and one call took 24x longer than
with one thread. The process's own CPU time, with torch on one intra-op thread, stayed within
about 7 %: the time the scheduler gives to other processes is not counted. So on a CPU the clock
is the process's CPU time (``time.process_time``: every thread of this process, no other
process); on CUDA it is a pair of CUDA events around the call with a synchronize after it (the
GPU's own time for the queued work). Every reading keeps the wall seconds beside it.

A speed ratio is the median of per-round pairs (reference / variant, timed in the same round), and
:func:`median_interval` gives its distribution-free confidence interval: the order statistics of
the sorted pairs whose binomial coverage of the median is at least 95 %. It needs no assumption
about the shape of the noise, and it widens honestly when the pairs scatter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Reading:
    """One timed call: ``seconds`` on the clock that reports it, ``wall_s`` beside it."""

    seconds: float
    wall_s: float


class Clock:
    """Times one call. ``name`` is what tables and ``metrics.json`` print as the clock."""

    name = "wall"
    description = "wall time (time.perf_counter)"

    def time(self, call: Callable[[], object]) -> Reading:
        began = time.perf_counter()
        call()
        wall = time.perf_counter() - began
        return Reading(wall, wall)


class CpuTimeClock(Clock):
    """The process's own CPU time (all of its threads, no other process), wall time beside."""

    name = "cpu_time"
    description = "the process's own CPU time (time.process_time), one intra-op thread"

    def time(self, call: Callable[[], object]) -> Reading:
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        return Reading(time.process_time() - cpu, time.perf_counter() - wall)


class CudaEventClock(Clock):
    """CUDA events recorded before and after the call on the current stream, synchronized."""

    name = "cuda_events"
    description = "CUDA events around the call, synchronized"

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device if device is not None else "cuda")

    def time(self, call: Callable[[], object]) -> Reading:
        torch.cuda.synchronize(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        wall = time.perf_counter()
        start.record()
        call()
        end.record()
        torch.cuda.synchronize(self.device)
        return Reading(start.elapsed_time(end) / 1000, time.perf_counter() - wall)


CLOCKS = {clock.name: clock for clock in (Clock, CpuTimeClock, CudaEventClock)}


def clock_for(device: torch.device | str, name: str = "auto") -> Clock:
    """The clock for work on ``device``: ``auto`` is CUDA events on a CUDA device and the process's
    CPU time elsewhere; ``wall``, ``cpu_time`` and ``cuda_events`` name one."""
    device = torch.device(device)
    if name == "auto":
        name = "cuda_events" if device.type == "cuda" else "cpu_time"
    if name not in CLOCKS:
        raise ValueError(f"unknown clock {name!r}: use auto, {', '.join(CLOCKS)}")
    if name == "cuda_events":
        if device.type != "cuda":
            raise ValueError(f"the cuda_events clock times CUDA work; this run is on {device}: use cpu_time or wall")
        return CudaEventClock(device)
    return CLOCKS[name]()


def pin_one_thread() -> None:
    """One intra-op and (where torch still allows it) one inter-op thread: the setting under which
    the CPU-time clock holds while other processes share the cores."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first inter-op work; one pool of its own then
        pass


#: coverage of :func:`median_interval`
CONFIDENCE = 0.95


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(low, median, high)``: the median of ``values`` and a distribution-free interval around
    it. For n sorted values the interval is ``[x_(k), x_(n+1-k)]`` with the largest k whose
    binomial tail ``P(Binomial(n, 1/2) < k)`` stays within ``(1 - confidence) / 2`` on each side.
    With fewer than 6 values no such k exists at 95 %: the interval is then the whole range."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    n = len(ordered)
    middle = n // 2
    median = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    tail, k, below = (1 - confidence) / 2, 0, 0.0
    while k < middle:
        below += math.comb(n, k) / 2**n  # P(X = k)
        if below > tail:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], median, ordered[n - k]


def relative_half_width(interval: tuple[float, float, float]) -> float:
    """The larger distance from the median to an end of the interval, relative to the median."""
    low, median, high = interval
    return max(median - low, high - median) / median if median else math.inf
