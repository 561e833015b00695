"""``cache.budget`` (a fraction of steps computed) on the step-mask cache, and the ``adaptive``
policy that places that budget from the forecast error measured at computed steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import dit_engine
from dit_engine.caches.block_cache import BranchState
from dit_engine.caches.scm import AdaptiveStepRule, budget_flags, flags_to_string, preset_flags
from dit_engine.errors import PlanError
from dit_engine.session import Session
from dit_engine.transforms.step_state import noise_levels
from test_dbcache import run_tiny


@pytest.mark.parametrize("steps", [8, 28, 50])
@pytest.mark.parametrize("budget", [0.1, 0.2, 0.5, 0.9, 1.0])
def test_a_budget_computes_that_share_of_the_steps(steps, budget):
    flags = budget_flags(budget, steps)
    assert len(flags) == steps and flags[0]
    assert sum(flags) == max(1, round(budget * steps))


def test_presets_are_budgets_of_their_fraction():
    assert budget_flags(0.25, 28) == preset_flags("ultra", 28)
    assert flags_to_string(preset_flags("fast", 28)) == "1001000100100010010010001001"  # 9 of 28, spread to the end
    assert flags_to_string(budget_flags(0.18, 28)) == "1000001000000100000010000010"  # 5 of 28: the last one step early
    assert flags_to_string(budget_flags(0.11, 28)) == "1000000000001000000000001000"  # 3 of 28: three steps early


SHIFT_3 = [3 * t / (1 + 2 * t) for t in (1 - i / 28 for i in range(28))]  # a FLUX-like shifted schedule


@pytest.mark.parametrize("steps", [8, 28, 50])
@pytest.mark.parametrize("budget", [0.1, 0.2, 0.5, 0.9, 1.0])
def test_a_sigma_layout_computes_the_same_share_at_distinct_steps(steps, budget):
    sigmas = [3 * t / (1 + 2 * t) for t in (1 - i / steps for i in range(steps))]
    flags = budget_flags(budget, steps, sigmas)
    assert len(flags) == steps and flags[0] and sum(flags) == max(1, round(budget * steps))


def test_a_sigma_layout_spaces_computes_by_noise_level():
    assert flags_to_string(budget_flags(0.11, 28, SHIFT_3)) == "1000000000000000010000001000"  # 0, 17, 24
    steps = [i for i, flag in enumerate(budget_flags(0.18, 28, SHIFT_3)) if flag]
    drops = [SHIFT_3[a] - SHIFT_3[b] for a, b in zip(steps, steps[1:])]
    assert max(drops) - min(drops) < 0.06  # even in sigma (about 0.2 each), not in steps
    uniform = [1 - i / 28 for i in range(28)]
    by_sigma = [i for i, flag in enumerate(budget_flags(0.18, 28, uniform)) if flag]
    by_step = [i for i, flag in enumerate(budget_flags(0.18, 28)) if flag]
    assert all(abs(a - b) <= 1 for a, b in zip(by_sigma, by_step))  # an unshifted schedule: the same, up to rounding


def test_cache_layout_sigmas_reads_the_request_sigmas(tiny_pipe):
    _, summary = _summary(tiny_pipe, "cache=scm_static", "cache.budget=0.18", "cache.layout=sigmas")
    masks = summary["transforms"]["cache.scm"]["branches"]["transformer/cfg0"]["masks"]
    sigmas = noise_levels(tiny_pipe.scheduler)  # the run's (unshifted, float32)
    assert masks == [flags_to_string(budget_flags(0.18, 28, sigmas))]


def _summary(pipe, *overrides):
    handle = dit_engine.apply(pipe, *overrides)
    try:
        return run_tiny(pipe), handle.summary()
    finally:
        handle.remove()


@pytest.mark.parametrize("policy", ["static", "adaptive"])
def test_budget_one_is_identical_to_no_cache(tiny_pipe, policy):
    reference = run_tiny(tiny_pipe)
    output, summary = _summary(tiny_pipe, "cache=scm_static", "calibrator=taylorseer", "cache.budget=1.0", f"cache.policy={policy}")
    assert torch.equal(reference, output) and summary["steps_cached"] == 0


@pytest.mark.parametrize("policy", ["static", "adaptive"])
def test_the_budget_is_what_is_computed(tiny_pipe, policy):
    _, summary = _summary(tiny_pipe, "cache=scm_static", "calibrator=taylorseer", "cache.budget=0.25", f"cache.policy={policy}")
    assert summary["compute_fraction"] == pytest.approx(7 / 28)


@pytest.mark.parametrize("overrides,message", [
    (["cache=scm_static", "cache.budget=0"], "cache.budget=0.0 must be in (0, 1]"),
    (["cache=scm_static", "cache.budget=1.5"], "cache.budget=1.5 must be in (0, 1]"),
    (["cache=scm_static", "cache.budget=nan"], "cache.budget=nan is not a finite number"),
    (["cache=scm_static", "cache.budget=0.2", "cache.mask=1010"], "cache.budget and cache.mask both say"),
    (["cache=scm_static", "cache.policy=adaptive", "cache.mask=1010"], "give cache.budget=<fraction> instead of cache.mask"),
])
def test_bad_budgets_are_one_line_plan_errors(overrides, message):
    with pytest.raises(PlanError) as err:
        Session.from_overrides(overrides).prepare()
    assert message in str(err.value) and len(str(err.value).strip().splitlines()) == 1


class _Cache:
    """What the rule reads of a block cache: the step count and the limits (none here)."""

    def __init__(self, steps, sigmas=None):
        self.step_state = SimpleNamespace(num_steps=steps, sigmas=sigmas)
        self.forecaster = None

    def follows_leader(self):
        return False

    def may_cache(self, state, step):
        return step > 0


def _mask(rule, steps, error_at, sigmas=None):
    cache, state = _Cache(steps, sigmas), BranchState()
    rule.new_request(cache)
    flags = []
    for step in range(steps):
        hit = rule.should_hit(cache, state, step, None, None)
        flags.append(not hit)
        if not hit:
            rule.forecast_error(state, step, error_at(step))
    return flags


def test_adaptive_starts_from_the_sigma_layout_when_asked():
    flags = _mask(AdaptiveStepRule(0.18, by_sigma=True), 28, lambda step: 0.05, SHIFT_3)
    computed = [i for i, flag in enumerate(flags) if flag]
    by_sigma = [i for i, flag in enumerate(budget_flags(0.18, 28, SHIFT_3)) if flag]
    assert len(computed) == 5 and computed[:2] == by_sigma[:2] == [0, 12]  # the step layout's second is 6


def test_adaptive_spreads_evenly_while_the_error_is_steady_and_comes_back_sooner_after_a_bend():
    steady = _mask(AdaptiveStepRule(0.25), 28, lambda step: 0.05)
    assert sum(steady) == 7 and steady == budget_flags(0.25, 28)
    # the error jumps at the third compute after the head: the next compute comes sooner
    bent = _mask(AdaptiveStepRule(0.25), 28, lambda step: 1.0 if 12 <= step <= 15 else 0.02)
    computed, even = [i for i, f in enumerate(bent) if f], [i for i, f in enumerate(steady) if f]
    assert sum(bent) == 7
    after = next(i for i in computed if i >= 12)
    assert computed[computed.index(after) + 1] - after < even[even.index(next(i for i in even if i >= 12)) + 1] - next(i for i in even if i >= 12)
