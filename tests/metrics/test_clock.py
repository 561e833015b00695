"""The benchmark and run clocks: the CPU-time clock counts this process's work and not the time
it waits; the ratio interval covers the median as often as it says."""

from __future__ import annotations

import random
import statistics
import time

import pytest

from dit_engine.metrics.clock import Clock, CpuTimeClock, clock_for, median_interval, relative_half_width


def test_the_cpu_time_clock_does_not_count_waiting():
    reading = CpuTimeClock().time(lambda: time.sleep(0.2))  # no CPU work: what a descheduled process sees
    assert reading.wall_s >= 0.2 and reading.seconds < 0.05


def test_the_cpu_time_clock_counts_work():
    def spin():
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass
    reading = CpuTimeClock().time(spin)
    assert reading.seconds >= 0.1 and reading.wall_s >= reading.seconds * 0.9


def test_clock_choice():
    assert clock_for("cpu").name == "cpu_time" and clock_for("cpu", "wall").name == "wall"
    assert isinstance(clock_for("cpu", "wall"), Clock)
    with pytest.raises(ValueError, match="cuda_events clock times CUDA work"):
        clock_for("cpu", "cuda_events")
    with pytest.raises(ValueError, match="unknown clock"):
        clock_for("cpu", "sundial")


def test_small_samples_get_the_whole_range():
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 3.5, 6.0)  # P(all 6 on one side) = 1/32 < 5 %


@pytest.mark.parametrize("n", [8, 20, 41])
def test_the_interval_covers_the_median_at_least_95_percent_of_the_time(n):
    rng = random.Random(n)
    trials, covered = 2000, 0
    for _ in range(trials):  # skewed noise, as interference makes it: the true median of lognormal(0, 0.1) is 1
        low, _, high = median_interval([rng.lognormvariate(0.0, 0.1) for _ in range(n)])
        covered += low <= 1.0 <= high
    assert covered / trials >= 0.94  # 95 % nominal (order statistics give at least that), sampling slack


def test_the_interval_narrows_with_more_rounds():
    rng = random.Random(0)
    widths = [relative_half_width(median_interval([rng.gauss(1.0, 0.05) for _ in range(n)])) for n in (10, 40, 160)]
    assert widths[0] > widths[1] > widths[2]


@pytest.mark.parametrize(("clock", "message"), [
    ("sundial", "report.clock=sundial is unknown; use auto, cpu_time, cuda_events, wall"),
    ("cuda_events", "report.clock=cuda_events times CUDA work and this run is on cpu"),
])
def test_a_bad_run_clock_is_refused_before_anything_loads(clock, message):
    from dit_engine.errors import DitEngineError
    from dit_engine.session import Session

    with pytest.raises(DitEngineError, match=message):
        Session.from_overrides([f"report.clock={clock}", "model.device=cpu"]).prepare()
