"""The benchmarks' harness: interleaved rounds on a clock that holds on a shared machine, a ratio
with its interval, and rounds added until that interval is within ±2 %.

* **Clock.** On a CPU every variant is timed by the process's own CPU time with torch on one
  intra-op and one inter-op thread (benchmarks/conftest.py pins them); the wall time prints
  beside it. On CUDA the clock is CUDA events with a synchronize (``dit_engine.metrics.clock``).
  ``BENCH_CLOCK=wall`` times by wall instead, to compare.
* **Rounds.** Every variant runs once per round, odd rounds in reverse order, so slow drift hits
  every variant alike. A ratio is the median of the per-round pairs reference / variant, and its
  interval the distribution-free 95 % interval of that median (``median_interval``). After
  ``min_rounds``, rounds are added until every ratio's interval is within ``TOLERANCE`` (±2 %)
  of its median, or ``max_rounds`` is reached.
* **Trust.** The guard judges the clock that is reported. With the CPU-time clock other
  processes' load does not enter the reading (it is printed, not judged): a table measured beside
  a busy neighbour still reports and checks its targets, its intervals saying how precise it is
  (:func:`precision_note`; a ratio that did not settle within ±2 % by ``max_rounds`` is marked
  UNSETTLED). A target is judged with the interval (:func:`verdict`): it fails only when the
  whole interval lies below it. Only the wall clock (``BENCH_CLOCK=wall``) on a machine where others took more than
  ``MAX_OTHERS`` of the CPU is no result: that table prints marked UNTRUSTED and its speed targets
  are skipped, not passed.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dit_engine.metrics.clock import Clock, Reading, clock_for, median_interval, relative_half_width

#: the interval (relative half-width) within which a ratio counts as measured
TOLERANCE = 0.02
#: with the wall clock: the share of the machine's CPU time other processes may take during a
#: measurement before its ratios stop being results (the CPU-time clock does not count theirs)
MAX_OTHERS = 0.10
MIN_ROUNDS = int(os.environ.get("BENCH_MIN_ROUNDS", "6"))
MAX_ROUNDS = int(os.environ.get("BENCH_MAX_ROUNDS", "60"))
#: wall seconds after which one measurement adds no more rounds (settled or not)
MAX_SECONDS = float(os.environ.get("BENCH_MAX_SECONDS", "600"))


def bench_clock(device: str | torch.device = "cpu") -> Clock:
    """The clock the benchmarks report: ``BENCH_CLOCK`` (auto, cpu_time, wall, cuda_events)."""
    return clock_for(device, os.environ.get("BENCH_CLOCK", "auto"))


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


#: A runner times its variant once: it does its untimed set-up (apply a plan), times the call with
#: the clock it is given and undoes the set-up.
Runner = Callable[[Clock], Reading]


class GcFreeClock(Clock):
    """``clock`` with Python's garbage collector run before each timed call and off during it (as
    ``timeit`` does): a collection set off by a variant's set-up would otherwise land in the
    timed call of whichever variant came next."""

    def __init__(self, clock: Clock):
        self.clock, self.name, self.description = clock, clock.name, clock.description

    def time(self, call: Callable[[], object]) -> Reading:
        gc.collect()
        gc.disable()
        try:
            return self.clock.time(call)
        finally:
            gc.enable()


def timing(call: Callable[[], object]) -> Runner:
    """The runner of a plain call."""
    return lambda clock: clock.time(call)


def planned(pipe, call: Callable[[], object], overrides: tuple[str, ...]) -> Runner:
    """The runner of ``call`` under the plan of ``overrides``, applied to ``pipe`` before the timed
    call and removed after it (both outside the clock), so every variant runs on the same modules."""
    import dit_engine

    def run(clock: Clock) -> Reading:
        handle = dit_engine.apply(pipe, *overrides)
        try:
            return clock.time(call)
        finally:
            handle.remove()
    return run


@dataclass
class Timings:
    """Clock seconds (and wall seconds) per round for every variant, in the order they were added."""

    clock: Clock
    reference: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)
    #: the share of the machine's CPU other processes took while the rounds ran (None: unknown)
    others: float | None = None
    rounds: int = 0

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def wall_median(self, name: str) -> float:
        return statistics.median(self.wall[name])

    def pairs(self, name: str, reference: str | None = None) -> list[float]:
        """Per-round ratios reference / ``name`` (> 1: ``name`` is faster)."""
        reference = reference or self.reference
        return [a / b for a, b in zip(self.seconds[reference], self.seconds[name])]

    def interval(self, name: str, reference: str | None = None) -> tuple[float, float, float]:
        """(low, ratio, high): the median of the per-round pairs and its 95 % interval."""
        return median_interval(self.pairs(name, reference))

    def ratio(self, name: str, reference: str | None = None) -> float:
        return self.interval(name, reference)[1]

    def wall_ratio(self, name: str, reference: str | None = None) -> float:
        reference = reference or self.reference
        return statistics.median(a / b for a, b in zip(self.wall[reference], self.wall[name]))

    def spread(self, name: str) -> float:
        """Interquartile range of ``name``'s clock seconds over their median."""
        values = self.seconds[name]
        if len(values) < 4:
            return 0.0
        q1, _, q3 = statistics.quantiles(values, n=4)
        return (q3 - q1) / statistics.median(values)

    def unsettled(self) -> dict[str, float]:
        """The variants whose ratio's interval is wider than the tolerance: name -> half-width."""
        widths = {name: relative_half_width(self.interval(name)) for name in self.seconds if name != self.reference}
        return {name: width for name, width in widths.items() if width > TOLERANCE}

    def heading(self) -> str:
        """The line that says how these timings were taken."""
        load = "" if self.others is None else f"; other processes took {self.others:.0%} of the machine's CPU"
        threads = f", torch threads {torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op"
        return (f"clock: {self.clock.description}, garbage collector off while timed{threads}; {self.rounds} interleaved rounds; ratio = {self.reference} / "
                f"variant, median of per-round pairs [95 % interval]{load}")

    def cell(self, name: str) -> str:
        """``ratio [low, high]`` of one variant, for a table."""
        low, ratio, high = self.interval(name)
        return f"{ratio:6.3f} [{low:.3f}, {high:.3f}]"


def interleaved(runners: dict[str, Runner], clock: Clock | None = None, *, min_rounds: int = MIN_ROUNDS,
                max_rounds: int = MAX_ROUNDS, max_seconds: float = MAX_SECONDS, warmup: int = 1) -> Timings:
    """Run every runner once per round, interleaved (odd rounds in reverse order), until every
    ratio against the first runner (the reference) is within ±``TOLERANCE``, or ``max_rounds``
    rounds ran, or ``max_seconds`` of wall time passed (at least ``min_rounds`` rounds)."""
    clock = GcFreeClock(clock or bench_clock())
    for _ in range(warmup):
        for run in runners.values():
            run(clock)
    names = list(runners)
    timings = Timings(clock, names[0], {name: [] for name in names}, {name: [] for name in names})
    busy, own, start = _machine_busy(), _own_cpu(), time.perf_counter()
    def more() -> bool:
        if timings.rounds < max(min_rounds, 1):
            return True
        return timings.rounds < max_rounds and time.perf_counter() - start < max_seconds and bool(timings.unsettled())

    while more():
        for name in names if timings.rounds % 2 == 0 else reversed(names):
            reading = runners[name](clock)
            timings.seconds[name].append(reading.seconds)
            timings.wall[name].append(reading.wall_s)
        timings.rounds += 1
    if busy is not None:
        elapsed = (time.perf_counter() - start) * (os.cpu_count() or 1)
        timings.others = max(0.0, (_machine_busy() - busy) - (_own_cpu() - own)) / elapsed
    return timings


def distrust(timings: Timings) -> str | None:
    """Why these timings are no result at all, or None: only the wall clock under load (the
    CPU-time and CUDA-event clocks do not count other processes' time)."""
    if timings.clock.name == "wall" and timings.others is not None and timings.others > MAX_OTHERS:
        return f"wall clock while other processes took {timings.others:.0%} of the machine's CPU (> {MAX_OTHERS:.0%})"
    return None


def precision_note(timings: Timings) -> str:
    """One line: whether every ratio settled within the tolerance, or which did not and how wide
    its interval stayed (the verdicts are then only as precise as that interval)."""
    unsettled = timings.unsettled()
    if not unsettled:
        return f"every ratio settled within ±{TOLERANCE:.0%} in {timings.rounds} rounds"
    worst = max(unsettled, key=unsettled.get)
    return (f"UNSETTLED: {len(unsettled)} ratio(s) wider than ±{TOLERANCE:.0%} after {timings.rounds} rounds "
            f"(widest {worst}: ±{unsettled[worst]:.1%}); their verdicts are only that precise")


def verdict(interval: tuple[float, float, float], target: float) -> str:
    """A lower bound ``target`` on a ratio, judged with its interval: ``met`` (the median reaches
    it), ``within noise`` (the median misses it, the interval still reaches it: not refuted at
    this precision) or ``MISSED`` (the whole interval lies below it: refuted). Only ``MISSED``
    fails a benchmark; the table prints the verdict beside the interval."""
    low, ratio, high = interval
    if ratio >= target:
        return "met"
    return "within noise" if high >= target else "MISSED"


@contextmanager
def busy_neighbour(processes: int | None = None) -> Iterator[int]:
    """Other processes spinning on the CPU while the block runs (one per core by default): the
    load a shared build machine puts beside a benchmark. Yields how many were started."""
    count = processes or os.cpu_count() or 1
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let the scheduler spread them
        yield count
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


#: Tables the benchmarks print at the end of the session (benchmarks/conftest.py), pass or fail.
TABLES: list[str] = []


@dataclass
class Shares:
    """Where a plain call's time goes: the share inside the transformer calls and the share inside
    the block stacks (first block entered to last block left), measured with hooks on the
    benchmark's clock over a few untimed passes.

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


def time_shares(pipe, adapter, call: Callable[[], object], clock: Clock, repeats: int = 3) -> Shares:
    """Measure :class:`Shares` of ``call`` on ``pipe`` with ``clock``'s time source (the process's
    CPU time or wall; hooks are removed afterwards)."""
    now = time.process_time if clock.name == "cpu_time" else time.perf_counter
    spent = {"transformer": 0.0, "blocks": 0.0}
    started: dict[str, float] = {}
    handles = []

    def enter(key):
        return lambda *_args, **_kwargs: started.__setitem__(key, now())

    def leave(key, total):
        def hook(*_args, **_kwargs):
            spent[total] += now() - started[key]
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
        began = now()
        for _ in range(repeats):
            call()
        total = now() - began
    finally:
        for handle in handles:
            handle.remove()
    return Shares(transformer=spent["transformer"] / total, blocks=spent["blocks"] / total)


def is_model_level(handle) -> bool:
    """Whether an applied plan answers whole transformer calls on cached steps (step-level caches)."""
    return any(getattr(t, "model_level", lambda: False)() for t in handle.transforms)
