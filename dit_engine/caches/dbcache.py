"""Block-stack caching hooks: DBCache and its step-mask variant (SCM), with optional forecasting.

The block lists of a transformer are one sequence of N blocks. Per transformer call:

1. the first ``front_blocks`` (Fn) run; at the end of them (or, with Fn = 0, before the first
   block) the call is decided: *compute* or *hit*. DBCache hits when the relative L1 change of the
   Fn residual against the last *computed* step of this CFG branch is below the threshold (so slow
   drift accumulates until it forces a compute); a step mask (SCM) can force computes and, with the
   ``static`` policy, force hits;
2. on a hit every middle block returns its input unchanged, except the first middle block of each
   block list, which adds that list's middle-span residual: the one stored at the last computed
   step, or a forecast of it when a calibrator (e.g. TaylorSeer) is bound;
3. on a compute every block runs and the middle-span residuals are stored (and fed to the
   calibrator's history);
4. the last ``back_blocks`` (Bn) always run.

Residuals are kept per block list because the parent model may transform the streams between
lists; each list's span is reused in its own representation. State is kept per (transformer,
CFG branch) and dropped at every new request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from diffusers.hooks import HookRegistry, ModelHook

from dit_engine.adapter import BlockPattern, BlockSpec
from dit_engine.steps import StepState

HOOK_NAME = "dit_engine.dbcache"


class Forecaster(Protocol):
    """A calibrator's view of one residual stream: fold in computed values, predict skipped ones."""

    def update(self, history: Any, value: torch.Tensor, step: int) -> Any: ...

    def forecast(self, history: Any, step: int) -> torch.Tensor: ...


@dataclass
class BranchState:
    """Cache state of one CFG branch of one transformer, for the current request."""

    front_entry: torch.Tensor | None = None
    front_residual: torch.Tensor | None = None  # at the last computed step
    probe: torch.Tensor | None = None  # TeaCache: the modulated input of the previous call
    accumulated: float = 0.0  # TeaCache: rescaled change; MagCache: error since the last compute
    accumulated_ratio: float = 1.0  # MagCache
    span_entry: dict[int, tuple] = field(default_factory=dict)
    span_residual: dict[int, tuple] = field(default_factory=dict)  # plain: (hidden, encoder); calibrated: histories
    hit: bool = False
    step: int = -1  # index of the current call within the request
    calls: int = 0
    cached_steps: int = 0
    continuous_cached: int = 0
    mask: list[str] = field(default_factory=list)


@dataclass
class DBCacheSettings:
    """Resolved settings of one block-stack cache.

    ``step_mask(num_steps)`` returns per-step flags, True where the step must compute (SCM);
    ``policy`` says what the other steps do: ``dynamic`` obeys the threshold, ``static`` reuses.
    ``shared_cfg_decision``: CFG branches after the first follow the first branch's decision.
    """

    front_blocks: int
    back_blocks: int
    threshold: float
    warmup_steps: int
    max_cached_steps: int
    max_continuous_cached_steps: int
    step_mask: Callable[[int], list[bool]] | None = None
    policy: str = "dynamic"
    shared_cfg_decision: bool = False


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous| (inf when previous is zero and current is not)."""
    scale = previous.abs().mean()
    change = (current - previous).abs().mean()
    return float(change / scale) if scale > 0 else float(change > 0) * float("inf")


class DBCacheState:
    """Decisions and counters of one block-stack cache over one transformer."""

    def __init__(self, name: str, settings: DBCacheSettings, step_state: StepState, lists: list[tuple[str, int, int]]):
        self.name = name
        self.settings = settings
        self.step_state = step_state
        # (block-list path, blocks in list, front+back blocks in list, i.e. computed on a hit)
        self.lists = lists
        self.forecaster: Forecaster | None = None
        self.branches: dict[int, BranchState] = {}
        self.compute_flags: list[bool] | None = None
        self.reset_stats()
        step_state.on_request(self.new_request)

    def new_request(self) -> None:
        for branch, state in self.branches.items():
            if state.mask:
                self.masks.setdefault(branch, []).append("".join(state.mask))
        self.branches.clear()
        mask = self.settings.step_mask
        self.compute_flags = mask(self.step_state.num_steps) if mask and self.step_state.num_steps else None

    def reset_stats(self) -> None:
        self.masks: dict[int, list[str]] = {}
        self.steps_cached: dict[int, int] = {}
        self.steps_total: dict[int, int] = {}
        self.blocks_computed = {path: 0 for path, _, _ in self.lists}
        self.blocks_total = {path: 0 for path, _, _ in self.lists}
        for state in self.branches.values():
            state.mask = []

    def current(self) -> BranchState:
        branch = self.step_state.branch
        state = self.branches.get(branch)
        if state is None:
            state = self.branches[branch] = BranchState()
        return state

    def _may_cache(self, state: BranchState, step: int) -> bool:
        s = self.settings
        flags = self.compute_flags
        if flags is not None and (step >= len(flags) or flags[step]):
            return False
        return (
            step >= s.warmup_steps
            and len(state.span_residual) > 0
            and (s.max_cached_steps < 0 or state.cached_steps < s.max_cached_steps)
            and (s.max_continuous_cached_steps < 0 or state.continuous_cached < s.max_continuous_cached_steps)
        )

    def should_hit(self, state: BranchState, step: int, front_residual: torch.Tensor | None, entry: tuple | None) -> bool:
        """DBCache / SCM rule; TeaCache and MagCache override it. ``entry`` is the first block's
        ``(module, args, kwargs)`` when the decision is taken before it runs (Fn = 0)."""
        s = self.settings
        hit = self._may_cache(state, step)
        if hit and s.shared_cfg_decision and self.step_state.branch > 0:
            leader = self.branches.get(0)
            return leader is not None and leader.step == step and leader.hit
        if hit and (self.compute_flags is None or s.policy == "dynamic"):
            previous = state.front_residual
            return (
                front_residual is not None
                and previous is not None
                and previous.shape == front_residual.shape
                and s.threshold > 0
                and relative_l1(front_residual, previous) < s.threshold
            )
        return hit

    def decide(self, state: BranchState, front_residual: torch.Tensor | None, entry: tuple | None = None) -> None:
        """Hit (reuse or forecast the middle) or compute; ``front_residual`` is None when Fn = 0."""
        step = state.step = state.calls
        state.calls += 1
        hit = self.should_hit(state, step, front_residual, entry)
        state.hit = hit
        state.front_entry = None
        if hit:
            state.cached_steps += 1
            state.continuous_cached += 1
        else:
            state.continuous_cached = 0
            if front_residual is not None:
                state.front_residual = front_residual
        state.mask.append("0" if hit else "1")
        branch = self.step_state.branch
        self.steps_total[branch] = self.steps_total.get(branch, 0) + 1
        self.steps_cached[branch] = self.steps_cached.get(branch, 0) + int(hit)
        for path, count, always in self.lists:
            self.blocks_total[path] += count
            self.blocks_computed[path] += always if hit else count

    def store_span(self, state: BranchState, span: int, hidden: torch.Tensor, encoder: torch.Tensor | None) -> None:
        """Keep a computed middle-span residual (folded into the forecaster's history if bound)."""
        if self.forecaster is None:
            state.span_residual[span] = (hidden, encoder)
            return
        old_hidden, old_encoder = state.span_residual.get(span, (None, None))
        new_hidden = self.forecaster.update(old_hidden, hidden, state.step)
        new_encoder = self.forecaster.update(old_encoder, encoder, state.step) if encoder is not None else None
        state.span_residual[span] = (new_hidden, new_encoder)

    def span_delta(self, state: BranchState, span: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The residual a hit adds for ``span``: the stored one or its forecast."""
        hidden, encoder = state.span_residual[span]
        if self.forecaster is None:
            return hidden, encoder
        forecast = self.forecaster.forecast
        return forecast(hidden, state.step), (forecast(encoder, state.step) if encoder is not None else None)

    def stats(self) -> dict:
        masks = {b: list(m) for b, m in self.masks.items()}
        for branch, state in self.branches.items():  # the request still in progress
            if state.mask:
                masks.setdefault(branch, []).append("".join(state.mask))
        computed, total = sum(self.blocks_computed.values()), sum(self.blocks_total.values())
        return {
            "blocks_computed": computed,
            "blocks_total": total,
            "blocks_skipped": total - computed,
            "steps_cached": sum(self.steps_cached.values()),
            "steps_total": sum(self.steps_total.values()),
            "block_lists": {
                f"{self.name}.{path}": {"computed": self.blocks_computed[path], "total": self.blocks_total[path]}
                for path, _, _ in self.lists
            },
            "branches": {
                f"{self.name}/cfg{branch}": {
                    "steps_computed": self.steps_total.get(branch, 0) - self.steps_cached.get(branch, 0),
                    "steps_cached": self.steps_cached.get(branch, 0),
                    "masks": masks.get(branch, []),
                }
                for branch in sorted(set(self.steps_total) | set(masks))
            },
        }


class DBCacheBlockHook(ModelHook):
    """The hook on one block; its role flags say what it does in the sequence."""

    def __init__(self, cache: DBCacheState, pattern: BlockPattern, *, first: bool, front_exit: bool,
                 span: int | None, span_first: bool, span_last: bool):
        super().__init__()
        self.cache = cache
        self.pattern = pattern
        self.first = first
        self.front_exit = front_exit
        self.span = span
        self.span_first = span_first
        self.span_last = span_last
        # With Fn = 0 the decision is taken before the first block runs.
        self.decide_on_entry = first and span is not None

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        state = cache.current()
        pattern = self.pattern
        if self.decide_on_entry:
            cache.decide(state, None, (module, args, kwargs))
        if self.span is not None and state.hit:
            hidden, encoder = pattern.read_inputs(args, kwargs)
            if self.span_first:
                delta_hidden, delta_encoder = cache.span_delta(state, self.span)
                hidden = hidden + delta_hidden
                if encoder is not None and delta_encoder is not None:
                    encoder = encoder + delta_encoder
            return pattern.make_output(hidden, encoder)

        if self.first and not self.decide_on_entry:
            state.front_entry = pattern.read_inputs(args, kwargs)[0]
        if self.span_first:
            state.span_entry[self.span] = pattern.read_inputs(args, kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.span_last:
            entry_hidden, entry_encoder = state.span_entry.pop(self.span)
            out_hidden, out_encoder = pattern.read_outputs(output)
            residual_encoder = None
            if entry_encoder is not None and out_encoder is not None and entry_encoder.shape == out_encoder.shape:
                residual_encoder = out_encoder - entry_encoder
            cache.store_span(state, self.span, out_hidden - entry_hidden, residual_encoder)
        if self.front_exit:
            cache.decide(state, pattern.read_outputs(output)[0] - state.front_entry)
        return output


def install_dbcache(name: str, transformer: torch.nn.Module, block_lists: list[tuple[BlockSpec, torch.nn.ModuleList]],
                    settings: DBCacheSettings, step_state: StepState,
                    state_factory: Callable[..., DBCacheState] = DBCacheState) -> tuple[DBCacheState, list[torch.nn.Module]]:
    """Hook the blocks of one transformer; return its state and the hooked blocks (for removal)."""
    sequence = [(spec, block) for spec, blocks in block_lists for block in blocks]
    total = len(sequence)
    front, back = settings.front_blocks, settings.back_blocks
    middle = range(front, total - back)

    lists = []
    position = 0
    for spec, blocks in block_lists:
        always = sum(1 for i in range(position, position + len(blocks)) if i not in middle)
        lists.append((spec.path, len(blocks), always))
        position += len(blocks)
    cache = state_factory(name, settings, step_state, lists)

    # Middle spans: consecutive middle blocks of one block list share one residual.
    span_of: dict[int, int] = {}
    span_index = -1
    previous_spec = None
    for i in middle:
        if sequence[i][0] is not previous_spec:
            span_index += 1
            previous_spec = sequence[i][0]
        span_of[i] = span_index

    hooked = []
    for i, (spec, block) in enumerate(sequence):
        span = span_of.get(i)
        roles = dict(
            first=i == 0,
            front_exit=i == front - 1,
            span=span,
            span_first=span is not None and span_of.get(i - 1) != span,
            span_last=span is not None and span_of.get(i + 1) != span,
        )
        if not (roles["first"] or roles["front_exit"] or span is not None):
            continue  # front blocks in between and back blocks run untouched
        hook = DBCacheBlockHook(cache, spec.pattern, **roles)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, HOOK_NAME)
        hooked.append(block)
    return cache, hooked



class ModelOutputHook(ModelHook):
    """Model-level step skipping: on a cached step the whole transformer call is answered with the
    output of the last computed step, or its forecast when a calibrator is bound. No block, no
    embedding and no output layer runs, so the wall speedup approaches 1 / compute fraction.
    """

    def __init__(self, cache: DBCacheState):
        super().__init__()
        self.cache = cache

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        state = cache.current()
        cache.decide(state, None)
        return_dict = kwargs.get("return_dict", True)
        if state.hit:
            sample = cache.span_delta(state, 0)[0]
            if not return_dict:
                return (sample,)
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=sample)
        output = self.fn_ref.original_forward(*args, **kwargs)
        sample = output[0] if isinstance(output, tuple) else output.sample
        cache.store_span(state, 0, sample, None)
        return output


def install_output_cache(name: str, transformer: torch.nn.Module, block_lists: list[tuple[BlockSpec, torch.nn.ModuleList]],
                         settings: DBCacheSettings, step_state: StepState) -> tuple[DBCacheState, list[torch.nn.Module]]:
    """Hook one transformer for model-level step skipping; return its state and the hooked module."""
    lists = [(spec.path, len(blocks), 0) for spec, blocks in block_lists]
    cache = DBCacheState(name, settings, step_state, lists)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(ModelOutputHook(cache), HOOK_NAME)
    return cache, [transformer]
