"""Calibration: record the signals TeaCache and MagCache decide from, on a plain (uncached) run.

``python -m dit_engine cache=calibrate`` runs the workload with every step computed and writes
``calibration.json``: TeaCache's polynomial (fitted from the relative L1 change of the
timestep-modulated input to the relative L1 change of the block-stack residual) and MagCache's
magnitude-ratio curve (mean over tokens of |residual_t| / |residual_t-1|, averaged over prompts and
CFG branches). ``cache=teacache`` / ``cache=magcache`` load it with ``cache.calibration_file``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook

from dit_engine.adapter import BlockPattern, BlockSpec
from dit_engine.caches.dbcache import relative_l1
from dit_engine.steps import StepState

HOOK_NAME = "dit_engine.calibrate"
TEACACHE_DEGREE = 4


@dataclass
class BranchRecord:
    probe: torch.Tensor | None = None
    entry: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    probe_changes: list[float] = field(default_factory=list)
    residual_changes: list[float] = field(default_factory=list)
    norm_ratios: list[float] = field(default_factory=list)


class CalibrationRecorder:
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
        return result


class _EntryExitHook(ModelHook):
    def __init__(self, recorder: CalibrationRecorder, pattern: BlockPattern, entry: bool, exit: bool):
        super().__init__()
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
    sequence = [(spec, block) for spec, blocks in block_lists for block in blocks]
    recorder = CalibrationRecorder(step_state, probe)
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
