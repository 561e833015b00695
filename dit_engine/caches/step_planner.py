"""Planned step schedules: which steps of a request compute, chosen from a recorded trajectory.

Step-level forecasting (``cache=scm_static``) computes a few steps and forecasts the model output
of the others. Where those computes sit decides the quality more than anything else; the fixed
layouts of :func:`~dit_engine.caches.scm.budget_flags` place them by rule. A plan places them by
measurement (after DPCache, arXiv 2602.22654):

1. ``cache=plan_steps`` runs the workload uncached and records the model output of every step
   (a fixed random sample of its elements, the same for every step, so the record stays small),
   and keeps the first pipeline call whole (its transformer calls) for replays;
2. for each budget of ``k`` computed steps, :meth:`Planner.plan` proposes candidates (the layout
   rules, dynamic programming over pairs of consecutive computes on the recorded forecast error
   of the run's forecaster, the ``calibrator=`` of the planning run or plain reuse, and a local
   search from it), judges them by :class:`Replay` (the sampler run again with the transformer on
   the computed steps: closed loop) and refines the best there;
3. the schedules are written as ``schedule.json`` with a signature of what they were planned for
   (model, transformer config, steps, resolution, scheduler, sigmas, calibrator); a run with
   ``cache.schedule=<file>`` refuses a request whose signature differs, naming the field.

The recorded (open-loop) objective is the error a forecast leaves in the final sample: a
flow-matching Euler step moves the sample by ``(sigma_{s+1} - sigma_s) * v_s``, so a forecast
``v'_s`` of a skipped step leaves ``d_s (v_s - v'_s)`` in it, and the errors of the skipped steps
add up as vectors: the mean square of that sum (per gap for the dynamic programme, whose costs
must add). It cannot see a forecast's error change what the model computes at the next computed
step, and misjudged late computes by 1-2 dB on the embedded model; the replays can.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from diffusers.hooks import HookRegistry

from dit_engine.adapter import ModelInfo
from dit_engine.caches.step_layout import budget_flags, computes_for  # noqa: F401 - computes_for: also imported from here
from dit_engine.config.groups import Stage
from dit_engine.errors import DitEngineError
from dit_engine.hooks import StatefulHook, remove_hook
from dit_engine.steps import StepState
from dit_engine.transforms.base import ApplyContext, Lifecycle, PlanContext, Transform
from dit_engine.caches.configs import PlanStepsConfig  # noqa: F401 - the schema, torch-free (re-exported)

HOOK_NAME = "dit_engine.plan_steps"
logger = logging.getLogger(__name__)
#: The file a planning run writes into the run directory.
ARTIFACT = "schedule.json"
#: The artifact's format; a file of another version is refused.
FORMAT = "dit_engine.step_schedule/1"
PLAN_HINT = ("plan one with `python -m dit_engine cache=plan_steps calibrator=<the calibrator you run>` on this model and "
             "workload, and pass cache.schedule=<run dir>/schedule.json")
#: Signature fields, in the order a mismatch is reported.
SIGNATURE_FIELDS = ("model", "transformer", "steps", "resolution", "scheduler", "sigmas", "calibrator")


class ScheduleMismatchError(DitEngineError):
    """A request differs from what ``cache.schedule`` was planned for (one field named)."""


# -- signatures ---------------------------------------------------------------------------------


def config_hash(config: Any) -> str:
    """A short stable hash of a diffusers config (private ``_`` keys left out)."""
    items = {key: value for key, value in dict(config or {}).items() if not str(key).startswith("_")}
    text = json.dumps(items, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scheduler_name(scheduler: Any) -> str:
    """``ClassName:confighash`` of a scheduler."""
    return f"{type(scheduler).__name__}:{config_hash(getattr(scheduler, 'config', None))}"


def rounded(sigmas: list[float] | None) -> list[float] | None:
    return None if sigmas is None else [round(float(s), 6) for s in sigmas]


def first_difference(planned: dict[str, Any], actual: dict[str, Any], fields: tuple[str, ...] = SIGNATURE_FIELDS) -> str | None:
    """The first signature field (in ``fields``) where ``actual`` differs from ``planned``, or None."""
    for key in fields:
        if key in actual and planned.get(key) != actual[key]:
            return key
    return None


def mismatch_message(path: str, key: str, planned: Any, actual: Any) -> str:
    def show(value: Any) -> str:
        if isinstance(value, list) and len(value) > 6:
            return "[" + ", ".join(str(v) for v in value[:3]) + ", ...]"
        return str(value)
    return (f"cache.schedule={path} was planned for {key}={show(planned)}, this request has {key}={show(actual)}; "
            f"{PLAN_HINT}")


# -- recording ----------------------------------------------------------------------------------


def latent_shape(args: tuple, kwargs: dict) -> list[int] | None:
    """The per-sample shape of a transformer call's ``hidden_states`` (the resolution it runs at)."""
    sample = kwargs.get("hidden_states", args[0] if args else None)
    return list(sample.shape[1:]) if isinstance(sample, torch.Tensor) else None


@dataclass
class RecordedCall:
    """One transformer call of a replayed request: its arguments, and its sample and output kept
    on the CPU (a video's 50 steps would hold gigabytes of accelerator memory)."""

    args: tuple
    kwargs: dict
    sample: torch.Tensor
    device: torch.device
    output: torch.Tensor | None = None


class TrajectoryRecorder:
    """Per request and CFG branch: a fixed sample of the model output's elements at every step;
    and the whole calls of the first ``replay_requests`` requests, for closed-loop replays."""

    def __init__(self, step_state: StepState, sample_elements: int, seed: int, replay_requests: int):
        self.step_state = step_state
        self.sample_elements = sample_elements
        self.seed = seed
        self.replay_requests = replay_requests
        self.index: torch.Tensor | None = None
        self.requests: list[dict[int, list[torch.Tensor]]] = []
        self.calls: list[list[RecordedCall]] = []  # per replayable request, branch 0's calls
        self.branches = 1
        self.sigmas: list[float] | None = None
        self.num_steps = 0
        self.shape: list[int] | None = None
        self.paused = False
        step_state.on_request(self.new_request)

    def new_request(self) -> None:
        if self.paused:
            return
        self.requests.append({})
        if len(self.calls) < self.replay_requests:
            self.calls.append([])
        self.sigmas = rounded(self.step_state.sigmas) if self.step_state.sigmas else self.sigmas
        self.num_steps = self.step_state.num_steps or self.num_steps

    def before_call(self, args: tuple, kwargs: dict) -> None:
        if self.paused:
            return
        self.shape = latent_shape(args, kwargs) or self.shape
        branch = self.step_state.branch
        self.branches = max(self.branches, branch + 1)
        replaying = len(self.calls) == len(self.requests) and len(self.calls) <= self.replay_requests
        if branch == 0 and replaying and self.calls:
            sample = kwargs.get("hidden_states", args[0] if args else None)
            if isinstance(sample, torch.Tensor):
                self.calls[-1].append(RecordedCall(args, dict(kwargs), sample.detach().to("cpu", copy=True), sample.device))

    def record(self, sample: torch.Tensor) -> None:
        if self.paused:
            return
        if not self.requests:
            self.requests.append({})
        if self.step_state.branch == 0 and self.calls and self.calls[-1] and len(self.calls) == len(self.requests):
            self.calls[-1][-1].output = sample.detach().to("cpu", copy=True)
        flat = sample.detach().reshape(sample.shape[0], -1).float().cpu()
        if self.index is None or int(self.index.max()) >= flat.shape[1]:
            count = flat.shape[1]
            if count <= self.sample_elements:
                self.index = torch.arange(count)
            else:
                generator = torch.Generator().manual_seed(self.seed)
                self.index = torch.randperm(count, generator=generator)[: self.sample_elements].sort().values
        self.requests[-1].setdefault(self.step_state.branch, []).append(flat[:, self.index])

    def trajectory(self) -> torch.Tensor | None:
        """``(steps, samples, elements)`` over every complete recorded request and branch."""
        runs = [torch.stack(steps) for request in self.requests for steps in request.values()
                if self.num_steps and len(steps) == self.num_steps]
        if not runs:
            return None
        return torch.cat(runs, dim=1).double()

    def replays(self) -> list[list[RecordedCall]]:
        """The recorded requests a closed-loop replay can run: one call per step, each complete."""
        if self.branches > 1:
            return []  # CFG branches combine outside the transformer: no replay of the sampler
        return [calls for calls in self.calls
                if len(calls) == self.num_steps and all(call.output is not None for call in calls)]


class _RecordHook(StatefulHook):
    def pre_forward(self, module, *args, **kwargs):
        self.cache.before_call(args, kwargs)
        return args, kwargs

    def post_forward(self, module, output):
        sample = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        if isinstance(sample, torch.Tensor):
            self.cache.record(sample)
        return output


# -- planning -----------------------------------------------------------------------------------


def step_weights(sigmas: list[float] | None, num_steps: int) -> np.ndarray:
    """How much step ``s``'s model output moves the sample: ``sigma_s - sigma_{s+1}`` (the last
    step ends at 0), or 1 / steps each when the sigmas are unknown."""
    if not sigmas or len(sigmas) < num_steps:
        return np.full(num_steps, 1.0 / max(num_steps, 1))
    levels = list(sigmas[:num_steps]) + [0.0]
    return np.abs(np.diff(np.asarray(levels, dtype=np.float64)))


ForecasterFactory = Callable[[], Any]


class Reuse:
    """The forecaster of a plan without a calibrator: a skipped step reuses the last computed value."""

    degree = 0

    def update(self, history: Any, value: torch.Tensor, step: int) -> torch.Tensor:
        return value

    def forecast(self, history: torch.Tensor, step: int) -> torch.Tensor:
        return history

#: A plan replaces the layout rule only where its replayed error is this share of the rule's or
#: less (about 1 dB better): on the embedded model, whose layout rule was tuned on it, plans 10-25 %
#: better on the planning seeds were 0.5-2 dB worse on others; on schedules the rule was not tuned
#: for (shifted sigmas) plans 35-80 % better gained 1.6-4 dB.
MIN_GAIN = 0.8
#: open-loop evaluations the local search after the dynamic programme may spend (each is a pass
#: of the forecaster over the recorded trajectory: cheap, but 50 steps offer many moves)
OPEN_LOOP_EVALUATIONS = 2000


class Replay:
    """Closed-loop replays of recorded requests: the sampler's Euler steps
    ``x_{s+1} = x_s + (sigma_{s+1} - sigma_s) v_s`` run again with the transformer called on the
    computed steps of a schedule (on the replayed sample, so a forecast's error feeds into what
    the model computes next, as in a cached run) and the forecaster answering the others. The
    error is the mean square of the final sample's difference from the uncached one, relative
    to the mean square of the uncached run's whole move."""

    #: a recorded step must follow the Euler update this closely (relative) for replays to be valid
    TOLERANCE = 1e-3

    def __init__(self, forward: Callable[..., Any], requests: list[list[RecordedCall]], sigmas: list[float],
                 make_forecaster: ForecasterFactory):
        self.forward = forward
        self.requests = requests
        self.levels = list(sigmas) + [0.0]
        self.make_forecaster = make_forecaster
        self.finals = [self._euler(calls[-1].sample, calls[-1].output, len(calls) - 1) for calls in requests]
        # the mean square of each uncached run's whole move: what an error is relative to
        self.scale = sum(float(((final.double() - calls[0].sample.double()) ** 2).mean()) for calls, final in zip(requests, self.finals))

    def _euler(self, sample: torch.Tensor, output: torch.Tensor, step: int) -> torch.Tensor:
        return (sample.double() + (self.levels[step + 1] - self.levels[step]) * output.double()).to(sample.dtype)

    def problem(self) -> str | None:
        """Why the recorded requests do not follow the Euler update (then replays are not the
        sampler: a scheduler of another kind, or guidance combined outside the transformer)."""
        if not self.requests:
            return "no request with one transformer call per step was recorded"
        for calls in self.requests:
            if any(call.output.shape != call.sample.shape for call in calls):
                return "the transformer's output is not shaped like its input sample (learned variance, or a packed layout)"
            for step in range(len(calls) - 1):
                expected = self._euler(calls[step].sample, calls[step].output, step).double()
                actual = calls[step + 1].sample.double()
                scale = float(actual.abs().mean()) or 1.0
                if float((expected - actual).abs().mean()) > self.TOLERANCE * scale:
                    return f"step {step + 1} of a recorded request is not the Euler update of step {step} (a sampler other than flow-matching Euler?)"
        return None

    def _call(self, call: RecordedCall, sample: torch.Tensor, step: int) -> torch.Tensor:
        kwargs = dict(call.kwargs)
        args = call.args
        if "hidden_states" in kwargs or not args:
            kwargs["hidden_states"] = sample
        else:
            args = (sample, *args[1:])
        output = self.forward(*args, **kwargs)
        return output[0] if isinstance(output, tuple) else getattr(output, "sample", output)

    def error(self, computed: list[int]) -> float:
        chosen, total = set(computed), 0.0
        with torch.no_grad():
            for calls, final in zip(self.requests, self.finals):
                forecaster = self.make_forecaster()
                sample, history = calls[0].sample.to(calls[0].device), None
                final = final.to(calls[0].device)
                for step, call in enumerate(calls):
                    if step in chosen:
                        output = self._call(call, sample, step)
                        history = forecaster.update(history, output, step)
                    else:
                        output = forecaster.forecast(history, step)
                    sample = self._euler(sample, output, step)
                total += float(((sample.double() - final.double()) ** 2).mean())
        return total / max(self.scale, 1e-30)


class Planner:
    """Chooses computed steps for a recorded trajectory and a forecaster (see the module doc)."""

    def __init__(self, trajectory: torch.Tensor, weights: np.ndarray, make_forecaster: ForecasterFactory,
                 replay: Replay | None = None, evaluations: int = 0, sigmas: list[float] | None = None):
        self.values = trajectory  # (steps, samples, elements), float64
        self.steps = trajectory.shape[0]
        self.weights = [float(w) for w in weights]
        self.make_forecaster = make_forecaster
        self.replay = replay
        self.evaluations = evaluations
        self.sigmas = sigmas
        self.scale = float(((trajectory * torch.tensor(self.weights, dtype=trajectory.dtype).view(-1, 1, 1)).sum(0) ** 2).mean())

    def _update(self, forecaster: Any, history: Any, step: int) -> Any:
        return forecaster.update(history, self.values[step], step)

    def open_loop_error(self, computed: list[int]) -> float:
        """The recorded trajectory's objective: mean square of the summed forecast errors,
        relative to the mean square of the whole trajectory's move (1e-4: a 1 % error)."""
        forecaster = self.make_forecaster()
        history, total = None, torch.zeros_like(self.values[0])
        chosen = set(computed)
        for step in range(self.steps):
            if step in chosen:
                history = self._update(forecaster, history, step)
            else:
                total += self.weights[step] * (self.values[step] - forecaster.forecast(history, step))
        return float((total**2).mean()) / max(self.scale, 1e-30)

    def gap_costs(self) -> np.ndarray:
        """``cost[a, b, c]``: the open-loop error of the steps between computes ``b`` and ``c``
        (``c`` = steps: to the end) forecast from the history of computes ``a`` and ``b``; ``a`` =
        steps stands for no earlier compute (``b`` is the first)."""
        n = self.steps
        cost = np.full((n + 1, n, n + 1), np.inf)
        for b in range(n):
            for a in [n] + list(range(b)):
                if a == n and b != 0:
                    continue  # only step 0 is computed with nothing before it
                forecaster = self.make_forecaster()
                history = None
                if a < n:
                    history = self._update(forecaster, history, a)
                history = self._update(forecaster, history, b)
                total = torch.zeros_like(self.values[0])
                cost[a, b, b + 1] = 0.0
                for step in range(b + 1, n):
                    total += self.weights[step] * (self.values[step] - forecaster.forecast(history, step))
                    cost[a, b, step + 1] = float((total**2).mean()) / max(self.scale, 1e-30)
        return cost

    def dynamic_programme(self, computes: int, cost: np.ndarray) -> list[int]:
        """The ``computes`` steps (step 0 first) that minimise the sum of the gaps' costs."""
        n = self.steps
        if computes >= n:
            return list(range(n))
        # best[a, b]: cost so far with the last two computes a < b (a = n: b is the only one)
        best = np.full((n + 1, n), np.inf)
        best[n, 0] = 0.0
        parents: list[np.ndarray] = []
        for _ in range(computes - 1):
            # next[b, c] = min over a of best[a, b] + cost[a, b, c]
            totals = best[:, :, None] + cost[:, :, :n]
            choice = np.argmin(totals, axis=0)
            following = np.take_along_axis(totals, choice[None], axis=0)[0]
            parents.append(choice)
            best = np.full((n + 1, n), np.inf)
            best[:n, :] = following
        final = best + cost[:, :, n]
        a, b = np.unravel_index(int(np.argmin(final)), final.shape)
        steps = [int(b)]
        for choice in reversed(parents):
            a, b = int(choice[a, b]), int(a)
            steps.append(b)
        return sorted(steps)

    def local_search(self, computed: list[int], error: Callable[[list[int]], float], moves: range | None = None,
                     limit: int | None = None) -> tuple[list[int], float, int]:
        """Move one compute at a time (never step 0) while ``error`` falls; ``moves``: the
        offsets tried (None: anywhere), ``limit``: at most this many evaluations."""
        current, best, used = sorted(computed), error(computed), 1
        improved = True
        while improved and (limit is None or used < limit):
            improved = False
            for position in range(1, len(current)):
                targets = range(1, self.steps) if moves is None else [current[position] + m for m in moves]
                for candidate in targets:
                    if not 0 < candidate < self.steps or candidate in current:
                        continue
                    if limit is not None and used >= limit:
                        break
                    trial = sorted(current[:position] + [candidate] + current[position + 1:])
                    trial_error = error(trial)
                    used += 1
                    if trial_error < best * (1 - 1e-9):
                        current, best, improved = trial, trial_error, True
                        break
                if improved:
                    break
        return current, best, used

    def layouts(self, computes: int) -> dict[str, list[int]]:
        """The layout rule's steps for ``computes``: spaced by step index, and by sigma."""
        n = self.steps
        layouts = {"steps": [i for i, flag in enumerate(budget_flags(computes / n, n)) if flag]}
        if self.sigmas:
            layouts["sigmas"] = [i for i, flag in enumerate(budget_flags(computes / n, n, self.sigmas)) if flag]
        return layouts

    def plan(self, computes: int, cost: np.ndarray | None = None) -> dict[str, Any]:
        """The schedule of ``computes`` steps, with the layout rules' errors beside it.

        Candidates: the layout rules (``cache.layout=steps`` and ``sigmas``), the dynamic
        programme's choice and a local search from it on the open-loop objective. With replays
        the candidates are judged closed loop and the best is refined there by moving one compute
        at a time (at most ``evaluations`` replays); a plan that is not clearly better than the
        best layout (:data:`MIN_GAIN`) gives way to it.
        """
        n = self.steps
        layouts = self.layouts(computes)
        if computes >= n:
            return {"computes": n, "steps": list(range(n)), "error": 0.0, "layout_errors": {k: 0.0 for k in layouts},
                    "objective": "none"}
        candidates = list(layouts.values())
        if cost is not None:
            candidates.append(self.dynamic_programme(computes, cost))
        candidates.append(self.local_search(candidates[-1], self.open_loop_error, limit=OPEN_LOOP_EVALUATIONS)[0])
        error = self.open_loop_error if self.replay is None else self.replay.error
        # only a replay sees a forecast's error change what the model computes next
        errors = {tuple(c): error(c) for c in map(sorted, candidates)}
        layout_errors = {name: errors[tuple(steps)] for name, steps in layouts.items()}
        start = min(errors, key=errors.get)
        if self.replay is None:
            steps, best, used = list(start), errors[start], 0
        else:
            budget = max(self.evaluations - len(errors), 1)
            steps, best, used = self.local_search(list(start), error, moves=range(-3, 4), limit=budget)
        best_layout = min(layout_errors, key=layout_errors.get)
        if best > MIN_GAIN * layout_errors[best_layout]:
            steps, best = layouts[best_layout], layout_errors[best_layout]  # within what another seed changes
        return {"computes": computes, "steps": steps, "error": best, "layout_errors": layout_errors,
                "objective": "closed_loop" if self.replay else "open_loop", "evaluations": len(errors) + used}


# -- the artifact -------------------------------------------------------------------------------


@dataclass
class Schedule:
    """A loaded ``schedule.json``: its signature and the computed steps per count of computes."""

    path: str
    signature: dict[str, Any]
    plans: dict[int, dict[str, Any]]

    def steps_for(self, computes: int) -> list[int] | None:
        plan = self.plans.get(computes)
        return None if plan is None else list(plan["steps"])

    def flags(self, computes: int, num_steps: int) -> list[bool]:
        steps = set(self.steps_for(computes) or [])
        return [i in steps for i in range(num_steps)]


def load_schedule(path: str) -> tuple[Schedule | None, str | None]:
    """The schedule in ``path``, or why it cannot be used (a one-line fix)."""
    file = Path(path).expanduser()
    if not file.is_file():
        return None, f"cache.schedule={path} does not exist; {PLAN_HINT}"
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        return None, f"cache.schedule={path} is not a schedule.json ({str(err).splitlines()[0]}); {PLAN_HINT}"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None, f"cache.schedule={path} is not a dit_engine schedule.json (format {FORMAT}); {PLAN_HINT}"
    signature, plans = data.get("signature"), data.get("schedules")
    if not isinstance(signature, dict) or not isinstance(plans, list) or not plans:
        return None, f"cache.schedule={path} has no signature or no schedules; {PLAN_HINT}"
    steps = signature.get("steps")
    parsed: dict[int, dict[str, Any]] = {}
    for plan in plans:
        computed = plan.get("steps") if isinstance(plan, dict) else None
        if (not isinstance(steps, int) or not isinstance(computed, list) or not computed
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < steps for s in computed)
                or computed[0] != 0 or sorted(set(computed)) != computed):
            return None, f"cache.schedule={path} holds a schedule that is not increasing steps from 0 below {steps}; {PLAN_HINT}"
        parsed[len(computed)] = plan
    return Schedule(str(path), signature, parsed), None


def planned_budgets(schedule: Schedule) -> str:
    steps = schedule.signature["steps"]
    return ", ".join(f"{k} of {steps} (cache.budget={k / steps:.3g})" for k in sorted(schedule.plans))


# -- the transform ------------------------------------------------------------------------------


def calibrator_label(configs: Any) -> str:
    """The calibrator a plan forecasts with, as a signature names it (``none`` without one)."""
    calibrator = configs.get("calibrator") if configs else None
    return getattr(calibrator, "name", None) or "none"


class PlanStepsTransform(Transform):
    """``cache=plan_steps``: compute every step, record the model output, plan the schedules."""

    name = "cache.plan_steps"
    # It records one process's outputs; a planning run runs without parallel=.
    lifecycle = Lifecycle(rank_consistent=False)
    stage = Stage.CACHE
    config_class = PlanStepsConfig

    @classmethod
    def check(cls, config: PlanStepsConfig, context: PlanContext) -> list[str]:
        problems = []
        if not config.budgets:
            problems.append("cache.budgets is empty; give the fractions of steps to plan for, e.g. cache.budgets=[0.11,0.18,0.25]")
        for budget in config.budgets:
            if not 0 < budget <= 1:  # NaN fails too
                problems.append(f"cache.budgets holds {budget}: each budget must be in (0, 1], e.g. cache.budgets=[0.11,0.18]")
        if config.replay_requests < 0:
            problems.append(f"cache.replay_requests={config.replay_requests} must be 0 (open-loop plan) or more")
        if config.evaluations < 1:
            problems.append(f"cache.evaluations={config.evaluations} must be 1 or more (replays per budget), e.g. 60")
        if config.sample_elements < 1:
            problems.append(f"cache.sample_elements={config.sample_elements} must be 1 or more (e.g. 65536)")
        return problems

    @classmethod
    def describe(cls, config: PlanStepsConfig, model_info: ModelInfo) -> str:
        budgets = ", ".join(f"{b:g}" for b in config.budgets)
        return f"step planner: every step computes; writes schedule.json (budgets {budgets})"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.adapter = context.adapter
        self.forecaster: Any = None
        self.calibrator = "none"
        self.scheduler = scheduler_name(getattr(pipe, "scheduler", None))
        # the first transformer is the denoiser a schedule is planned for (ScheduleGuard checks the same one)
        self.denoiser = next(iter(context.transformers.values()))
        self.transformer_hash = config_hash(getattr(self.denoiser, "config", None))
        self.recorder = TrajectoryRecorder(context.step_state, self.config.sample_elements, self.config.seed,
                                           self.config.replay_requests)
        HookRegistry.check_if_exists_or_initialize(self.denoiser).register_hook(_RecordHook(self.recorder), HOOK_NAME)
        self.hooked = [self.denoiser]

    # A calibrator binds here like to any step cache: the plan is made for its forecasts.
    def bind_forecaster(self, forecaster: Any) -> None:
        self.forecaster = forecaster
        self.calibrator = getattr(forecaster, "calibrator", type(forecaster).__name__)

    def unbind_forecaster(self) -> None:
        self.forecaster, self.calibrator = None, "none"

    def remove(self, pipe: Any) -> None:
        for module in self.hooked:
            remove_hook(module, HOOK_NAME)
        self.hooked = []

    def _forecaster_factory(self, sigmas: list[float] | None, num_steps: int) -> ForecasterFactory:
        if self.forecaster is None:
            return Reuse
        template = self.forecaster
        # a forecaster that reads the request's sigmas (Spectrum) sees the recorded ones
        planning_state = StepState(num_steps=num_steps, sigmas=sigmas)

        def make() -> Any:
            if not hasattr(template, "step_state"):
                return template  # forecasters keep no state of their own: the history is passed in
            clone = copy.copy(template)
            clone.step_state = planning_state
            return clone
        return make

    def _replay(self, make_forecaster: ForecasterFactory) -> tuple[Replay | None, str | None]:
        """Closed-loop replays of the recorded requests, or why there are none."""
        recorder = self.recorder
        if self.config.replay_requests == 0:
            return None, "cache.replay_requests=0"
        if recorder.branches > 1:
            return None, "the pipeline makes one transformer call per CFG branch; guidance combines them outside the transformer"
        replay = Replay(self.denoiser.forward, recorder.replays(), recorder.sigmas or [], make_forecaster)
        problem = replay.problem() if recorder.sigmas else "the scheduler gives no sigmas"
        return (None, problem) if problem else (replay, None)

    def artifacts(self) -> dict[str, Any]:
        recorder = self.recorder
        trajectory = recorder.trajectory()
        if trajectory is None:
            raise DitEngineError("cache=plan_steps recorded no complete request (no denoising step ran); run a workload with steps")
        steps = trajectory.shape[0]
        recorder.paused = True  # the replays call the transformer again
        try:
            make_forecaster = self._forecaster_factory(recorder.sigmas, steps)
            replay, why_open_loop = self._replay(make_forecaster)
            if why_open_loop:
                logger.warning("cache=plan_steps plans on the recorded trajectory only (open loop): %s", why_open_loop)
            planner = Planner(trajectory, step_weights(recorder.sigmas, steps), make_forecaster,
                              replay, self.config.evaluations, recorder.sigmas)
            cost = planner.gap_costs()
            schedules = []
            for computes in sorted({computes_for(b, steps) for b in self.config.budgets}):
                logger.info("cache=plan_steps: planning %d of %d steps (%s)", computes, steps,
                            f"up to {self.config.evaluations} replays" if replay else "open loop")
                plan = planner.plan(computes, cost)
                plan["budget"] = round(computes / steps, 4)
                plan["mask"] = "".join("1" if i in plan["steps"] else "0" for i in range(steps))
                schedules.append(plan)
                logger.info("cache=plan_steps: %s, error %.3g (layout rules: %s)", plan["mask"], plan["error"],
                            ", ".join(f"{layout} {error:.3g}" for layout, error in plan["layout_errors"].items()))
        finally:
            recorder.paused = False
        return {
            ARTIFACT: {
                "format": FORMAT,
                "signature": {
                    "model": self.adapter.name,
                    "transformer": self.transformer_hash,
                    "steps": steps,
                    "resolution": recorder.shape,
                    "scheduler": self.scheduler,
                    "sigmas": recorder.sigmas,
                    "calibrator": self.calibrator,
                },
                "recorded": {"requests": len(recorder.requests), "samples": int(trajectory.shape[1]),
                             "elements": int(trajectory.shape[2]), "replayed_requests": len(replay.requests) if replay else 0,
                             "open_loop_because": why_open_loop},
                "objective": ("closed_loop: mean square of the replayed final sample's difference from the uncached one" if replay else
                              "open_loop: mean square of sum_s (sigma_s - sigma_s+1) * (output_s - forecast_s) over skipped steps")
                + ", relative to the mean square of the uncached run's whole move",
                "schedules": schedules,
            }
        }


# -- using a schedule ---------------------------------------------------------------------------


def schedule_problems(path: str, fraction: float, *, model: str, calibrator: str, mask: str | None,
                      adaptive: bool) -> list[str]:
    """Why ``cache.schedule=path`` cannot serve this plan (the file, its model, calibrator and
    budget), each a one-line fix. The request's own fields are checked when it runs."""
    if mask is not None:
        return ["cache.schedule and cache.mask both say which steps compute; drop one of them"]
    if adaptive:
        return ["cache.policy=adaptive places its computes itself; drop cache.schedule or use cache.policy=static"]
    schedule, problem = load_schedule(path)
    if problem:
        return [problem]
    signature = schedule.signature
    for key, actual in (("model", model), ("calibrator", calibrator)):
        if signature.get(key) != actual:
            return [f"cache.schedule={path} was planned for {key}={signature.get(key)}, this run has {key}={actual}; {PLAN_HINT}"]
    steps = signature["steps"]
    computes = computes_for(fraction, steps)
    if computes not in schedule.plans:
        return [f"cache.schedule={path} has no plan for {computes} of {steps} steps (a budget of {fraction:g}); it planned "
                f"{planned_budgets(schedule)}: use one of those or plan again with cache=plan_steps cache.budgets=[{fraction:g}]"]
    return []


class ScheduleGuard:
    """Refuses what a schedule was not planned for: the pipeline at apply, each request at its
    start (steps, sigmas) and at its first transformer call (resolution)."""

    def __init__(self, schedule: Schedule, step_state: StepState):
        self.schedule = schedule
        self.step_state = step_state
        self.checked_request = -1

    def refuse(self, key: str, actual: Any) -> None:
        raise ScheduleMismatchError(mismatch_message(self.schedule.path, key, self.schedule.signature.get(key), actual))

    def check_pipeline(self, adapter_name: str, transformer: Any, scheduler: Any) -> None:
        actual = {"model": adapter_name, "transformer": config_hash(getattr(transformer, "config", None)),
                  "scheduler": scheduler_name(scheduler)}
        key = first_difference(self.schedule.signature, actual)
        if key:
            self.refuse(key, actual[key])

    def check_request(self) -> None:
        state = self.step_state
        actual: dict[str, Any] = {"steps": state.num_steps}
        if state.sigmas is not None and self.schedule.signature.get("sigmas") is not None:
            actual["sigmas"] = rounded(state.sigmas)
        key = first_difference(self.schedule.signature, actual)
        if key == "sigmas" and _close(self.schedule.signature["sigmas"], actual["sigmas"]):
            key = None
        if key:
            self.refuse(key, actual[key])

    def check_sample(self, module, args, kwargs) -> None:
        """Forward pre-hook on the denoiser: the latent shape of the request's first call."""
        if self.checked_request == self.step_state.request:
            return
        self.checked_request = self.step_state.request
        shape, planned = latent_shape(args, kwargs), self.schedule.signature.get("resolution")
        if shape is not None and planned is not None and shape != planned:
            self.refuse("resolution", shape)


def _close(planned: list[float], actual: list[float]) -> bool:
    return len(planned) == len(actual) and all(math.isclose(p, a, abs_tol=1e-5) for p, a in zip(planned, actual))
