"""The signal fit (``cache=fit_signals``; ``cache=calibration_run`` and ``cache=calibrate`` are its
old names): record the signals TeaCache and MagCache decide from, on a plain (uncached) run.

``python -m dit_engine cache=fit_signals`` runs the workload with every step computed and writes
``calibration.json``: TeaCache's polynomial (fitted from the relative L1 change of the
timestep-modulated input to the relative L1 change of the block-stack residual) and MagCache's
magnitude-ratio curve (mean over tokens of |residual_t| / |residual_t-1|, averaged over prompts and
CFG branches). ``cache=teacache`` / ``cache=magcache`` load it with ``cache.signals_file`` (old
name ``cache.calibration_file``). The ``calibrator=`` group is another thing: it forecasts cached
residuals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry

from dit_engine.adapter import Adapter, BlockPattern, BlockSpec, ModelInfo
from dit_engine.caches.block_cache import block_sequence, relative_l1
from dit_engine.hooks import StatefulHook, remove_hook
from dit_engine.config.groups import Stage
from dit_engine.steps import StepState
from dit_engine.transforms.base import ApplyContext, Lifecycle, Transform
from dit_engine.caches.configs import SignalFitConfig  # noqa: F401 - the schema, torch-free (re-exported)

HOOK_NAME = "dit_engine.fit_signals"
TEACACHE_DEGREE = 4
FIT_SIGNALS_HINT = (
    "run `python -m dit_engine cache=fit_signals` on this model (it writes calibration.json into the run directory) "
    "and pass cache.signals_file=<run dir>/calibration.json"
)
#: The file a signal fit writes into the run directory.
ARTIFACT = "calibration.json"


def read_signals(path: str, section: str, transformer: str | None = None) -> dict | None:
    """One section (``teacache`` / ``magcache``) of a calibration.json, for ``transformer`` or the
    first one. Assumes a file that :func:`signals_problem` accepted."""
    data = json.loads(Path(path).expanduser().read_text())
    per_transformer = data.get("transformers", {})
    entry = per_transformer.get(transformer) if transformer else None
    entry = entry or next(iter(per_transformer.values()), {})
    return entry.get(section)


def values_problem(values: Any, key: str, positive: bool = False) -> str | None:
    """Why fitted ``values`` (a polynomial, a ratio curve) cannot be used, or None."""
    if not isinstance(values, list) or not values:
        return f"{key} must be a non-empty list of numbers"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return f"{key} holds a value that is not a finite number"
    if positive and not all(v > 0 for v in values):
        return f"{key} holds a ratio that is not positive"
    return None


def signals_problem(path: str | None, section: str, value_key: str, model: str) -> str | None:
    """Why ``cache.signals_file`` cannot serve ``section`` for ``model``, or None."""
    if path is None:
        return None
    file = Path(path).expanduser()
    if not file.is_file():
        return f"cache.signals_file={path} does not exist; {FIT_SIGNALS_HINT}"
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        return f"cache.signals_file={path} is not a dit_engine calibration.json ({err}); {FIT_SIGNALS_HINT}"
    transformers = data.get("transformers") if isinstance(data, dict) else None
    if not isinstance(transformers, dict) or not all(isinstance(v, dict) for v in transformers.values()):
        return f"cache.signals_file={path} is not a dit_engine calibration.json (no 'transformers' mapping); {FIT_SIGNALS_HINT}"
    if data.get("model") not in (None, model):
        return f"cache.signals_file={path} was made for model={data['model']}, this run is model={model}; {FIT_SIGNALS_HINT}"
    sections = [entry.get(section) for entry in transformers.values()]
    if not any(sections):
        why = next((entry[f"{section}_missing"] for entry in transformers.values() if entry.get(f"{section}_missing")),
                   "the model's adapter gives no probe for it?")
        return f"cache.signals_file={path} has no {section} section ({why}); {FIT_SIGNALS_HINT}"
    for found in sections:
        if found is None:
            continue
        problem = values_problem(found.get(value_key) if isinstance(found, dict) else None, f"its {section}.{value_key}",
                                 positive=value_key == "mag_ratios")
        if problem:
            return f"cache.signals_file={path}: {problem}; {FIT_SIGNALS_HINT}"
    return None


@dataclass
class BranchRecord:
    probe: torch.Tensor | None = None
    entry: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    probe_changes: list[float] = field(default_factory=list)
    residual_changes: list[float] = field(default_factory=list)
    norm_ratios: list[float] = field(default_factory=list)


class SignalRecorder:
    """Per request and CFG branch: probe change, residual change and residual norm ratio per step."""

    def __init__(self, step_state: StepState, probe):
        self.step_state = step_state
        self.probe = probe
        self.branches: dict[int, BranchRecord] = {}
        self.finished: list[BranchRecord] = []
        self.num_steps = 0
        step_state.on_request(self.new_request)

    def new_request(self) -> None:
        self.finished.extend(r for r in self.branches.values() if r.norm_ratios)
        self.branches = {}
        self.num_steps = self.step_state.num_steps or self.num_steps

    def current(self) -> BranchRecord:
        return self.branches.setdefault(self.step_state.branch, BranchRecord())

    def on_entry(self, module, args, kwargs, pattern: BlockPattern) -> None:
        record = self.current()
        record.entry = pattern.read_inputs(args, kwargs)[0]
        if self.probe is not None:
            probe = self.probe(module, args, kwargs).detach()
            if record.probe is not None:
                record.probe_changes.append(relative_l1(probe, record.probe))
            record.probe = probe

    def on_exit(self, output, pattern: BlockPattern) -> None:
        record = self.current()
        residual = (pattern.read_outputs(output)[0] - record.entry).detach()
        if record.residual is None:
            record.norm_ratios.append(1.0)
        else:
            record.residual_changes.append(relative_l1(residual, record.residual))
            ratio = torch.linalg.norm(residual.float(), dim=-1) / (torch.linalg.norm(record.residual.float(), dim=-1) + 1e-8)
            record.norm_ratios.append(float(ratio.mean()))
        record.residual = residual

    def result(self) -> dict[str, Any]:
        records = self.finished + [r for r in self.branches.values() if r.norm_ratios]
        if not records:
            return {}
        steps = max(len(r.norm_ratios) for r in records)
        ratios = [float(np.mean([r.norm_ratios[i] for r in records if len(r.norm_ratios) > i])) for i in range(steps)]
        result: dict[str, Any] = {"num_steps": steps, "samples": len(records), "magcache": {"mag_ratios": ratios}}
        x = [v for r in records for v in r.probe_changes]
        y = [v for r in records for v in r.residual_changes[: len(r.probe_changes)]]
        x = x[: len(y)]
        if len(x) > TEACACHE_DEGREE:
            coefficients = np.polyfit(np.asarray(x), np.asarray(y), TEACACHE_DEGREE)
            result["teacache"] = {"coefficients": [float(c) for c in coefficients], "points": len(x)}
        elif self.probe is not None:
            result["teacache_missing"] = (f"the signal fit recorded {len(x)} probe changes and a degree-{TEACACHE_DEGREE} "
                                          "fit needs more: fit on more steps or prompts (e.g. workload=bench_16)")
        return result


class _EntryExitHook(StatefulHook):
    def __init__(self, recorder: SignalRecorder, pattern: BlockPattern, entry: bool, exit: bool):
        super().__init__(recorder)
        self.recorder, self.pattern, self.entry, self.exit = recorder, pattern, entry, exit

    def pre_forward(self, module, *args, **kwargs):
        if self.entry:
            self.recorder.on_entry(module, args, kwargs, self.pattern)
        return args, kwargs

    def post_forward(self, module, output):
        if self.exit:
            self.recorder.on_exit(output, self.pattern)
        return output


def install_recorder(block_lists: list[tuple[BlockSpec, torch.nn.ModuleList]], step_state: StepState, probe):
    """Hook the first and last block of the stack; return the recorder and the hooked blocks."""
    sequence = block_sequence(block_lists)
    recorder = SignalRecorder(step_state, probe)
    (first_spec, first), (last_spec, last) = sequence[0], sequence[-1]
    hooked = []
    if first is last:
        HookRegistry.check_if_exists_or_initialize(first).register_hook(_EntryExitHook(recorder, first_spec.pattern, True, True), HOOK_NAME)
        hooked.append(first)
    else:
        HookRegistry.check_if_exists_or_initialize(first).register_hook(_EntryExitHook(recorder, first_spec.pattern, True, False), HOOK_NAME)
        HookRegistry.check_if_exists_or_initialize(last).register_hook(_EntryExitHook(recorder, last_spec.pattern, False, True), HOOK_NAME)
        hooked += [first, last]
    return recorder, hooked


class SignalFitTransform(Transform):
    """``cache=fit_signals``: compute every step and record TeaCache's and MagCache's signals."""

    name = "cache.fit_signals"
    # It records per-rank statistics of one process; a signal fit runs without parallel=.
    lifecycle = Lifecycle(rank_consistent=False)
    stage = Stage.CACHE
    config_class = SignalFitConfig

    @classmethod
    def describe(cls, config: SignalFitConfig, model_info: ModelInfo) -> str:
        return "signal fit: every step computes; writes calibration.json (TeaCache polynomial, MagCache ratios)"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.adapter: Adapter = context.adapter
        self.recorders = {}
        self.hooked = []
        for name, transformer in context.transformers.items():
            recorder, hooked = install_recorder(context.adapter.block_lists(transformer), context.step_state, context.adapter.teacache_probe)
            self.recorders[name] = recorder
            self.hooked += hooked

    def remove(self, pipe: Any) -> None:
        for block in self.hooked:
            remove_hook(block, HOOK_NAME)
        self.hooked = []

    def artifacts(self) -> dict[str, Any]:
        return {
            ARTIFACT: {
                "model": self.adapter.name,
                "transformers": {name: recorder.result() for name, recorder in self.recorders.items()},
            }
        }
