"""DBPrune (``cache=dbprune``): dynamic block prune, decided block by block.

Every middle block (not among the first ``front_blocks`` or the last ``back_blocks``, which always
run) compares its input with its input at the last step it computed, in the same CFG branch of the
same transformer: when the relative L1 change is below the threshold the block is skipped and its
residual from that step is added instead. Finer-grained than DBCache (each block decides), at the
cost of one comparison per block. With ``cache.per_sample=true`` every sample of a batched call
decides block by block on its own input and keeps its own residuals: the samples that compute a
block run it as a sub-batch. Its config, hooks and transform live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry

from dit_engine.adapter import BlockPattern, BlockSpec, ModelInfo
from dit_engine.caches.constant_modules import memoize_constant_modules
from dit_engine.caches.block_cache import (BlockCacheTransform, block_sequence, branch_of,
                                           family_threshold, forward_rows, relative_l1)
from dit_engine.hooks import StatefulHook
from dit_engine.config.groups import Stage
from dit_engine.steps import StepState
from dit_engine.transforms.base import ApplyContext
from dit_engine.caches.configs import DBPruneConfig  # noqa: F401 - the schema, torch-free (re-exported)

HOOK_NAME = "dit_engine.dbprune"

#: ``cache.threshold`` defaults by adapter name, over :data:`LARGE_DIT_DBPRUNE_THRESHOLD` (a plain
#: dict: a plugin adds its family's entry when its adapter module is imported).
DBPRUNE_THRESHOLDS: dict[str, float] = {
    "tiny": 0.15,  # measured on the embedded digits model at 28 steps (benchmarks/, docs/caches.md)
}
#: Below DBCache's 0.08: DBPrune decides per block, where a smaller change already matters.
LARGE_DIT_DBPRUNE_THRESHOLD = 0.05


@dataclass
class PrunedBlock:
    """What one block saw and produced at the last step it computed.

    The residuals (output - entry) are taken only when the block is first pruned: a step that
    computes every block (threshold 0, or a step that changed a lot) pays no subtraction. The
    tensors' versions are recorded: one changed in place since (a model adding a control
    residual to a block's output) is no longer what the block produced, and the block computes."""

    entry: torch.Tensor
    output: torch.Tensor
    entry_encoder: torch.Tensor | None
    output_encoder: torch.Tensor | None
    pruned: int = 0  # this request
    pruned_in_a_row: int = 0
    _residuals: tuple | None = None
    _versions: tuple = ()

    def __post_init__(self):
        self._versions = self._tensor_versions()

    def _tensor_versions(self) -> tuple:
        return tuple(t._version for t in (self.entry, self.output, self.entry_encoder, self.output_encoder) if t is not None)

    def intact(self) -> bool:
        """Whether the stored tensors are still what the block saw and produced."""
        return self._residuals is not None or self._tensor_versions() == self._versions

    def residuals(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden residual, encoder residual or None), computed once."""
        if self._residuals is None:
            encoder = None
            if self.entry_encoder is not None and self.output_encoder is not None and self.entry_encoder.shape == self.output_encoder.shape:
                encoder = self.output_encoder - self.entry_encoder
            self._residuals = (self.output - self.entry, encoder)
        return self._residuals


@dataclass
class PruneBranchState:
    calls: int = 0
    blocks: dict[int, PrunedBlock] = field(default_factory=dict)
    computed_per_step: list[int] = field(default_factory=list)


class DBPruneState:
    """Per-block decisions and counters of one transformer."""

    def __init__(self, name: str, config: DBPruneConfig, step_state: StepState, middle_per_list: dict[str, int], lists: dict[str, int]):
        self.name = name
        self.config = config
        self.step_state = step_state
        self.middle_per_list = middle_per_list
        self.lists = lists
        self.branches: dict[Any, PruneBranchState] = {}  # by CFG branch, or (branch, sample) per sample
        self.group = None  # the sequence group of a context-parallel plan (statistics reduced over it)
        self.reset_stats()
        step_state.on_request(self.new_request)

    def new_request(self) -> None:
        for key, state in self.branches.items():
            if state.computed_per_step:
                self.history.setdefault(branch_of(key), []).append(list(state.computed_per_step))
        self.branches.clear()

    def reset_stats(self) -> None:
        self.history: dict[int, list[list[int]]] = {}
        self.blocks_total = {path: 0 for path in self.lists}
        self.blocks_computed = {path: 0 for path in self.lists}
        for state in self.branches.values():
            state.computed_per_step = []

    def current(self) -> PruneBranchState:
        branch = self.step_state.branch
        state = self.branches.get(branch)
        if state is None:
            state = self.branches[branch] = PruneBranchState()
        return state

    def sample_states(self, batch: int) -> list[PruneBranchState]:
        """``per_sample``: the state of each sample of this call's CFG branch."""
        branch = self.step_state.branch
        return [self.branches.setdefault((branch, row), PruneBranchState()) for row in range(batch)]

    def start_call(self, state: PruneBranchState) -> None:
        state.calls += 1
        state.computed_per_step.append(0)
        for path, count in self.lists.items():
            self.blocks_total[path] += count
            self.blocks_computed[path] += count - self.middle_per_list[path]

    def may_prune(self, state: PruneBranchState, block: PrunedBlock | None, hidden: torch.Tensor) -> bool:
        s = self.config
        return (
            block is not None
            and s.threshold > 0
            and state.calls - 1 >= s.warmup_steps
            and block.entry.shape == hidden.shape
            and block.intact()
            and (s.max_cached_steps < 0 or block.pruned < s.max_cached_steps)
            and (s.max_continuous_cached_steps < 0 or block.pruned_in_a_row < s.max_continuous_cached_steps)
            and relative_l1(hidden, block.entry, self.group) < s.threshold
        )

    def count_computed(self, state: PruneBranchState, path: str) -> None:
        state.computed_per_step[-1] += 1
        self.blocks_computed[path] += 1

    def stats(self) -> dict:
        history = {b: [list(h) for h in hs] for b, hs in self.history.items()}
        for key, state in self.branches.items():
            if state.computed_per_step:
                history.setdefault(branch_of(key), []).append(list(state.computed_per_step))
        computed, total = sum(self.blocks_computed.values()), sum(self.blocks_total.values())
        steps = sum(len(h) for hs in history.values() for h in hs)
        return {
            "blocks_computed": computed,
            "blocks_total": total,
            "blocks_skipped": total - computed,
            "steps_cached": 0,  # DBPrune never skips a whole step
            "steps_total": steps,
            "block_lists": {
                f"{self.name}.{path}": {"computed": self.blocks_computed[path], "total": self.blocks_total[path]}
                for path in self.lists
            },
            "branches": {
                f"{self.name}/cfg{branch}": {
                    "steps_computed": sum(len(h) for h in hs),  # every step runs its front and back blocks
                    "steps_cached": 0,
                    "middle_blocks_computed_per_step": hs,
                }
                for branch, hs in sorted(history.items())
            },
        }


class DBPruneBlockHook(StatefulHook):
    def __init__(self, cache: DBPruneState, pattern: BlockPattern, index: int, path: str, first: bool):
        super().__init__(cache)
        self.pattern = pattern
        self.index = index
        self.path = path
        self.first = first  # the first middle block starts the call's bookkeeping

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        state = cache.current()
        if self.first:
            cache.start_call(state)
        hidden, encoder = self.pattern.read_inputs(args, kwargs)
        block = state.blocks.get(self.index)
        if cache.may_prune(state, block, hidden):
            block.pruned += 1
            block.pruned_in_a_row += 1
            residual_hidden, residual_encoder = block.residuals()
            if encoder is not None and residual_encoder is not None:
                encoder = encoder + residual_encoder
            return self.pattern.make_output(hidden + residual_hidden, encoder)
        output = self.fn_ref.original_forward(*args, **kwargs)
        out_hidden, out_encoder = self.pattern.read_outputs(output)
        pruned = block.pruned if block is not None else 0
        state.blocks[self.index] = PrunedBlock(hidden, out_hidden, encoder, out_encoder, pruned, 0)
        cache.count_computed(state, self.path)
        return output


class SampleDBPruneBlockHook(DBPruneBlockHook):
    """:class:`DBPruneBlockHook` with a decision per sample (``per_sample``): each sample compares
    its own input with its input at the last step it computed this block; the samples that
    compute run the block as a sub-batch, the others add their own stored residual. Counters are
    per sample (a block forward of one sample counts one)."""

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        hidden, encoder = self.pattern.read_inputs(args, kwargs)
        states = cache.sample_states(hidden.shape[0])
        if self.first:
            for state in states:
                cache.start_call(state)
        blocks = [state.blocks.get(self.index) for state in states]
        prune = [cache.may_prune(state, block, hidden[row:row + 1]) for row, (state, block) in enumerate(zip(states, blocks))]
        computing = [row for row, pruned in enumerate(prune) if not pruned]
        if any(prune):
            hidden, encoder = hidden.clone(), encoder.clone() if encoder is not None else None
            for row, block in enumerate(blocks):
                if prune[row]:
                    block.pruned += 1
                    block.pruned_in_a_row += 1
                    residual_hidden, residual_encoder = block.residuals()
                    hidden[row:row + 1] += residual_hidden
                    if encoder is not None and residual_encoder is not None:
                        encoder[row:row + 1] += residual_encoder
        if not computing:
            return self.pattern.make_output(hidden, encoder)
        entry_hidden, entry_encoder = self.pattern.read_inputs(args, kwargs)
        output, out_hidden, out_encoder = forward_rows(self.fn_ref.original_forward, self.pattern, args, kwargs, computing,
                                                       hidden, encoder)
        for row in computing:
            one = slice(row, row + 1)
            pruned = blocks[row].pruned if blocks[row] is not None else 0
            states[row].blocks[self.index] = PrunedBlock(
                entry_hidden[one], out_hidden[one], entry_encoder[one] if entry_encoder is not None else None,
                out_encoder[one] if out_encoder is not None else None, pruned, 0)
            cache.count_computed(states[row], self.path)
        return output


def install_dbprune(name: str, block_lists: list[tuple[BlockSpec, torch.nn.ModuleList]], config: DBPruneConfig,
                    step_state: StepState) -> tuple[DBPruneState, list[torch.nn.Module]]:
    """Hook the middle blocks of one transformer; return its state and the hooked blocks."""
    sequence = block_sequence(block_lists)
    middle = range(config.front_blocks, len(sequence) - config.back_blocks)
    lists = {spec.path: len(blocks) for spec, blocks in block_lists}
    middle_per_list = {path: 0 for path in lists}
    for i in middle:
        middle_per_list[sequence[i][0].path] += 1
    cache = DBPruneState(name, config, step_state, middle_per_list, lists)
    hooked = []
    for i in middle:
        spec, block = sequence[i]
        hook_class = SampleDBPruneBlockHook if config.per_sample else DBPruneBlockHook
        hook = hook_class(cache, spec.pattern, i, spec.path, first=i == middle.start)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, HOOK_NAME)
        hooked.append(block)
    return cache, hooked


class DBPruneTransform(BlockCacheTransform):
    """``cache=dbprune``: hooks every middle block with its own decision. Not a forecast target:
    per-block residuals are reused as they are."""

    name = "cache.dbprune"
    stage = Stage.CACHE
    config_class = DBPruneConfig
    min_front_blocks = 0
    hook_name = HOOK_NAME

    @classmethod
    def family_defaults(cls, adapter: Any) -> dict[str, Any]:
        """The family's threshold (:data:`DBPRUNE_THRESHOLDS`)."""
        return family_threshold(DBPRUNE_THRESHOLDS, LARGE_DIT_DBPRUNE_THRESHOLD, adapter)

    @classmethod
    def describe(cls, config: DBPruneConfig, model_info: ModelInfo) -> str:
        return (
            f"DBPrune over {model_info.total_blocks} blocks, first {config.front_blocks} and last {config.back_blocks} never "
            f"pruned, threshold={config.threshold} per block, warmup_steps={config.warmup_steps}, "
            f"max_cached_steps={config.max_cached_steps} and max_continuous_cached_steps={config.max_continuous_cached_steps} per block"
        )

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.caches = []
        self.hooked = []
        self.constant_modules = []
        for name, transformer in context.transformers.items():
            cache, hooked = install_dbprune(name, context.adapter.block_lists(transformer), self.config, context.step_state)
            self.constant_modules += memoize_constant_modules(transformer, context.step_state)
            cache.group = context.sequence_group
            self.caches.append(cache)
            self.hooked.extend(hooked)
        self.sequence_group = context.sequence_group

    def split_batch(self, shard, group) -> None:
        if shard is not None:  # a block whose stored tensors changed since computes anyway: drop it
            for cache in self.caches:
                for state in cache.branches.values():
                    state.blocks = {index: block for index, block in state.blocks.items() if block.intact()}
        super().split_batch(shard, group)
        for cache in self.caches:  # this rank's parts are new tensors, as the block produced them
            for state in cache.branches.values():
                for block in state.blocks.values():
                    block._versions = block._tensor_versions()

