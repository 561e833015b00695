"""SCM, steps computation mask (``cache=scm``, ``cache=scm_static``): which denoising steps must
compute, on top of the block cache.

Flags are True where a step must compute. Presets are defined relative to the step count so the
same preset serves 8, 28 or 50 steps; explicit masks of another length are resampled; ``cache.budget`` asks for a fraction of
steps computed instead of a preset. On the other steps the ``dynamic`` policy still applies
DBCache's threshold, ``static`` reuses unconditionally; ``adaptive`` spends the budget where the
forecast error measured at computed steps says the trajectory bends (:class:`AdaptiveStepRule`);
``skip_level=model`` answers a cached step without running the transformer at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dit_engine.adapter import ModelInfo
from dit_engine.caches.block_cache import BlockCache, BranchState, ForecastableBlockCache, family_threshold
from dit_engine.caches.dbcache import threshold_hit
from dit_engine.caches.step_layout import budget_flags, evenly_spaced  # the layout rule (budget_flags also imported from here)
from dit_engine.caches.step_planner import (Schedule, ScheduleGuard, ScheduleMismatchError, calibrator_label, computes_for,
                                            load_schedule, mismatch_message, schedule_problems)
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, PlanContext
from dit_engine.caches.configs import SCMConfig, Preset, Policy, Layout, SkipLevel  # noqa: F401 - the schema, torch-free (re-exported)


#: Preset -> share of steps computed.
PRESET_FRACTIONS = {Preset.slow: 0.60, Preset.medium: 0.40, Preset.fast: 0.33, Preset.ultra: 0.25}


#: ``cache.threshold`` defaults by adapter name, over :data:`LARGE_DIT_SCM_THRESHOLD` (a plain dict:
#: a plugin adds its family's entry when its adapter module is imported).
SCM_THRESHOLDS: dict[str, float] = {
    "tiny": 0.2,  # measured on the embedded digits model at 28 steps (benchmarks/, docs/caches.md)
}
#: DBCache's large-DiT threshold: the dynamic policy applies DBCache's rule on the masked steps.
LARGE_DIT_SCM_THRESHOLD = 0.08


def preset_flags(preset: str, num_steps: int) -> list[bool]:
    """The flags of a preset: :func:`budget_flags` at the preset's fraction."""
    return budget_flags(PRESET_FRACTIONS[preset], num_steps)


def budget_fraction(config: SCMConfig) -> float:
    """The share of steps ``config`` computes: its budget, else its preset's (0 for no known preset,
    which the checks report)."""
    return config.budget if config.budget is not None else PRESET_FRACTIONS.get(config.preset, 0.0)


def budget_problem(budget: float | None) -> str | None:
    """Why ``cache.budget`` is unusable, or None."""
    if budget is not None and not 0 < budget <= 1:  # NaN fails too
        return f"cache.budget={budget} must be in (0, 1]: the fraction of steps computed, e.g. cache.budget=0.2"
    return None


def mask_problem(mask: str) -> str | None:
    """Why a mask string is malformed, or None."""
    if not mask:
        return "cache.mask is empty; give a bit string like 1111010101 (1 = compute) or drop it to use cache.preset"
    bad = sorted(set(mask) - {"0", "1"})
    if bad:
        return f"cache.mask={mask} has characters other than 0 and 1 ({''.join(bad)}); write it like 1111010101 (1 = compute)"
    return None


def resample(mask: str, num_steps: int) -> list[bool]:
    """Flags of ``mask`` stretched or squeezed to ``num_steps``: step i reads bit floor(i * len / N)."""
    return [mask[i * len(mask) // num_steps] == "1" for i in range(num_steps)]


def flags_to_string(flags: list[bool]) -> str:
    return "".join("1" if f else "0" for f in flags)


class StepMaskRule:
    """SCM's decision: masked-in steps compute; the others cache (``static``) or obey DBCache's
    threshold (``dynamic``), within the cache's limits."""

    def __init__(self, step_mask: Callable[[int, list[float] | None], list[bool]], policy: str, threshold: float):
        self.step_mask = step_mask
        self.policy = policy
        self.threshold = threshold
        self.flags: list[bool] | None = None

    def new_request(self, cache: BlockCache) -> None:
        num_steps = cache.step_state.num_steps
        self.flags = self.step_mask(num_steps, cache.step_state.sigmas) if num_steps else None

    def should_hit(self, cache: BlockCache, state: BranchState, step: int, front_residual, entry) -> bool:
        flags = self.flags
        if flags is not None and (step >= len(flags) or flags[step]):
            return False
        if not cache.may_cache(state, step):
            return False
        if cache.follows_leader():
            return cache.leader_hit(step)
        if flags is None or self.policy == "dynamic":  # no step count known: the threshold decides
            return threshold_hit(cache, state, front_residual, self.threshold)
        return True


#: an error constant this many times the earlier ones' (geometric) mean is a bend
BEND = 1.5


@dataclass
class AdaptiveBranch:
    """Per CFG branch: the planned and computed steps and the error constants measured."""

    computed: list[int] = field(default_factory=list)
    constants: list[float] = field(default_factory=list)
    plan: set[int] | None = None  # the steps to compute
    budget: int = 0
    end: int = 0  # where the static layout puts its last compute
    steps: int = 0


class AdaptiveStepRule:
    """Spend a budget of computed steps where the forecast is worst.

    The plan starts as the static layout of the budget (:func:`budget_flags`). Each computed step
    measures the error the forecast would have made there (relative L1 between the forecast from
    the history before it and the computed value; see :meth:`BlockCache.store_span`) and turns it
    into an error constant ``C = error / gap**p`` (``p`` = the forecaster's degree in the gap + 1,
    how its error grows with the gap; 1 for plain reuse). When the newest constant is a bend (over
    ``BEND`` times the earlier ones' geometric mean), the next compute comes sooner, after
    ``even_gap * (mean C / C) ** (1 / p)``, and the remaining budget is spread again from there.
    A steady trajectory gets exactly the static layout; the total stays ``round(budget * steps)``.
    """

    def __init__(self, fraction: float, by_sigma: bool = False):
        self.fraction = fraction
        self.by_sigma = by_sigma  # cache.layout=sigmas: the starting layout is spaced by sigma
        self.degree = 0  # the bound forecaster's degree in the gap (0: plain reuse), read at each request

    def new_request(self, cache: BlockCache) -> None:
        forecaster = cache.forecaster
        # a forecast of degree d in the gap errs like gap ** (d + 1) (Forecaster.degree)
        self.degree = forecaster.degree if forecaster is not None else 0

    def _branch(self, state: BranchState) -> AdaptiveBranch:
        if state.rule is None:
            state.rule = AdaptiveBranch()
        return state.rule

    def should_hit(self, cache: BlockCache, state: BranchState, step: int, front_residual, entry) -> bool:
        branch = self._branch(state)
        hit = self._decide(cache, state, branch, step)
        if not hit:
            branch.computed.append(step)
        return hit

    def _decide(self, cache: BlockCache, state: BranchState, branch: AdaptiveBranch, step: int) -> bool:
        if cache.follows_leader():
            return cache.leader_hit(step)
        num_steps = cache.step_state.num_steps
        if not num_steps:
            return False  # no step count to budget: compute
        if branch.plan is None:
            flags = budget_flags(self.fraction, num_steps, cache.step_state.sigmas if self.by_sigma else None)
            branch.plan = {i for i, f in enumerate(flags) if f}
            branch.budget, branch.end, branch.steps = len(branch.plan), max(branch.plan), num_steps
        left = branch.budget - len(branch.computed)
        if not cache.may_cache(state, step):
            return False  # nothing stored to answer from
        if left <= 0:
            return True
        return step not in branch.plan and left < num_steps - step  # planned, or every step left is needed

    def wants_forecast_error(self, state: BranchState) -> bool:
        """Whether a decision is left to make (a budget of every step has none: no measuring)."""
        branch = state.rule
        return branch is not None and branch.plan is not None and len(branch.plan) < branch.steps

    def forecast_error(self, state: BranchState, step: int, error: float) -> None:
        """Computed ``step``: the forecast from the previous computed step would have been
        ``error`` off (relative L1). A bend brings the next compute forward."""
        branch = self._branch(state)
        if len(branch.computed) < 2 or branch.computed[-1] != step or not math.isfinite(error):
            return
        power = self.degree + 1
        branch.constants.append(max(error, 1e-12) / (step - branch.computed[-2]) ** power)
        left = branch.budget - len(branch.computed)
        upcoming = sorted(s for s in branch.plan if s > step)
        if len(branch.constants) < 2 or left <= 0 or not upcoming:
            return
        earlier = branch.constants[:-1]
        typical = math.exp(sum(math.log(c) for c in earlier) / len(earlier))
        if branch.constants[-1] <= BEND * typical:
            return
        planned_gap = upcoming[0] - step
        # at most twice as soon: a trajectory that keeps bending must not spend the budget at once
        gap = max(planned_gap * (typical / branch.constants[-1]) ** (1 / power), planned_gap / 2)
        start = step + max(1, round(gap))
        if start >= upcoming[0]:
            return
        branch.plan = set(branch.computed) | set(evenly_spaced(start, max(branch.end, start + left - 1), left))


class SCMTransform(ForecastableBlockCache):
    """The block cache driven by a steps computation mask (``cache=scm``, ``cache=scm_static``)."""

    name = "cache.scm"
    stage = Stage.CACHE
    config_class = SCMConfig
    min_front_blocks = 0

    @classmethod
    def batch_invariant(cls, config: SCMConfig) -> bool:
        """The ``static`` policy caches by the mask alone, whatever the batch holds; the others
        with ``per_sample``."""
        return config.policy == "static" or bool(config.per_sample)

    @classmethod
    def per_sample_problems(cls, config: SCMConfig, context: Any) -> list[str]:
        problems = super().per_sample_problems(config, context)
        if config.skip_level == "model":
            problems.append("cache.per_sample=true decides per sample inside the block stack; cache.skip_level=model skips "
                            "whole calls (and its static policy is the same for every sample already): drop cache.per_sample")
        return problems

    @classmethod
    def family_defaults(cls, adapter: Any) -> dict[str, Any]:
        """The family's threshold (:data:`SCM_THRESHOLDS`), used by the ``dynamic`` policy."""
        return family_threshold(SCM_THRESHOLDS, LARGE_DIT_SCM_THRESHOLD, adapter)

    @classmethod
    def check(cls, config: SCMConfig, context: PlanContext) -> list[str]:
        problems = cls.block_problems(config, context, needs_threshold=config.policy == "dynamic")
        if config.policy == "dynamic" and config.front_blocks < 1:
            problems.append("cache.policy=dynamic decides from the front blocks' residual: use cache.front_blocks>=1 or cache.policy=static")
        if config.skip_level == "model" and config.policy == "dynamic":
            problems.append("cache.skip_level=model skips whole steps without a probe: it needs cache.policy=static or adaptive")
        problem = budget_problem(config.budget)
        if problem:
            problems.append(problem)
        elif config.budget is not None and config.mask is not None:
            problems.append("cache.budget and cache.mask both say which steps compute; drop one of them")
        if config.policy == "adaptive" and config.mask is not None:
            problems.append("cache.policy=adaptive places its computes itself: give cache.budget=<fraction> instead of cache.mask")
        if config.schedule is not None and not problem:
            problems += schedule_problems(config.schedule, budget_fraction(config), model=context.adapter.name,
                                          calibrator=calibrator_label(context.configs), mask=config.mask,
                                          adaptive=config.policy == "adaptive")
        if config.mask is not None:
            problem = mask_problem(config.mask)
            if problem:
                problems.append(problem)
        elif config.budget is None and config.preset is None:
            problems.append(f"cache.preset={config.preset} is unknown; use one of {', '.join(PRESET_FRACTIONS)} or give cache.mask=<bits>")
        return problems

    @classmethod
    def workload_problems(cls, config: SCMConfig, adapter: Any, call_kwargs: dict[str, Any]) -> list[str]:
        """A schedule planned for another step count than the workload's is refused before loading."""
        steps = call_kwargs.get("num_inference_steps")
        if config.schedule is None or not isinstance(steps, int):
            return []
        schedule, problem = load_schedule(config.schedule)
        if schedule is not None and schedule.signature.get("steps") != steps:
            return [mismatch_message(config.schedule, "steps", schedule.signature.get("steps"), steps)]
        return []

    @classmethod
    def describe(cls, config: SCMConfig, model_info: ModelInfo) -> str:
        if config.schedule:
            source = f"planned schedule {config.schedule}"
        elif config.mask:
            source = f"mask {config.mask} (resampled to the step count)"
        elif config.budget is not None:
            source = f"budget {config.budget:g} of the steps computed"
        else:
            source = f"preset {config.preset} (~{PRESET_FRACTIONS[config.preset]:.0%} of steps computed)"
        threshold = f", threshold={config.threshold}" if config.policy == "dynamic" else ""
        level = "whole transformer call" if config.skip_level == "model" else f"F{config.front_blocks}B{config.back_blocks} over {model_info.total_blocks} blocks"
        return f"SCM {level}, {source}, policy={config.policy}{threshold}, warmup_steps={config.warmup_steps}"

    def model_level(self) -> bool:
        return self.config.skip_level == "model"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.schedule: Schedule | None = None
        self.guarded: list[torch.utils.hooks.RemovableHandle] = []
        if self.config.schedule is not None:
            self.schedule, problem = load_schedule(self.config.schedule)
            if problem:  # the file changed since the plan was checked
                raise ScheduleMismatchError(problem)
            guard = ScheduleGuard(self.schedule, context.step_state)
            denoiser = next(iter(context.transformers.values()))
            guard.check_pipeline(context.adapter.name, denoiser, getattr(pipe, "scheduler", None))
            # registered before the cache's own listener reads the step count
            context.step_state.on_request(guard.check_request)
            self.guarded.append(denoiser.register_forward_pre_hook(guard.check_sample, with_kwargs=True))
        super().apply(pipe, context)

    def remove(self, pipe: Any) -> None:
        for handle in self.guarded:
            handle.remove()
        self.guarded = []
        super().remove(pipe)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        if self.schedule is not None:
            steps = self.schedule.signature["steps"]
            plan = self.schedule.plans[computes_for(self.fraction(), steps)]
            stats["schedule"] = {"file": self.schedule.path, "signature": self.schedule.signature,
                                 "steps": plan["steps"], "computes": plan["computes"],
                                 "planned_error": plan.get("error"), "layout_errors": plan.get("layout_errors")}
        return stats

    def fraction(self) -> float:
        """The share of steps computed: the budget, else the preset's."""
        return budget_fraction(self.config)

    def make_rule(self, transformer: str, context: ApplyContext) -> StepMaskRule | AdaptiveStepRule:
        c = self.config
        if c.policy == "adaptive":
            return AdaptiveStepRule(self.fraction(), by_sigma=c.layout == Layout.sigmas)
        if self.schedule is not None:
            schedule = self.schedule
            step_mask = lambda n, sigmas: schedule.flags(computes_for(self.fraction(), n), n)  # noqa: E731 - steps checked by the guard
        elif c.mask:
            step_mask = lambda n, sigmas: resample(c.mask, n)  # noqa: E731
        elif c.layout == Layout.sigmas:
            step_mask = lambda n, sigmas: budget_flags(self.fraction(), n, sigmas)  # noqa: E731
        else:
            step_mask = lambda n, sigmas: budget_flags(self.fraction(), n)  # noqa: E731
        return StepMaskRule(step_mask, c.policy, c.threshold if c.threshold is not None else 0.0)
