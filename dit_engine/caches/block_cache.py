"""The block cache: one hook mechanism over a transformer's block stack, with a pluggable rule
that decides, per transformer call, whether the middle blocks compute or are reused.

The block lists of a transformer are one sequence of N blocks. Per transformer call:

1. the first ``front_blocks`` (Fn) run; at the end of them (or, with Fn = 0, before the first
   block) the :class:`DecisionRule` decides: *compute* or *hit*;
2. on a hit every middle block returns its input unchanged, except the first middle block of each
   block list, which adds that list's middle-span residual: the one stored at the last computed
   step, or a forecast of it when a calibrator (e.g. TaylorSeer) is bound;
3. on a compute every block runs and the middle-span residuals are stored (and fed to the
   calibrator's history);
4. the last ``back_blocks`` (Bn) always run.

Residuals are kept per block list because the parent model may transform the streams between
lists; each list's span is reused in its own representation. State is kept per (transformer,
CFG branch) and dropped at every new request. ``install_output_cache`` is the same cache at model
level: a hit answers the whole transformer call, nothing runs.

The rules live with their techniques (DBCache's threshold in ``caches/dbcache.py``, SCM's step
mask in ``caches/scm.py``, TeaCache's and MagCache's signals in their modules); adding a rule is
adding a class with ``new_request`` and ``should_hit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from diffusers.hooks import HookRegistry

from dit_engine.adapter import BlockPattern, BlockSpec
from dit_engine.config.schema import BlockCacheConfig  # noqa: F401 - re-exported: the caches' shared settings
from dit_engine.caches.constant_modules import forget_constant_modules, memoize_constant_modules
from dit_engine.diffusers_adapter import DiffusersAdapter
from dit_engine.hooks import StatefulHook, remove_hook
from dit_engine.steps import StepState
from dit_engine.transforms.base import ApplyContext, Transform
from dit_engine.transforms.protocols import ForecastErrorRule

HOOK_NAME = "dit_engine.block_cache"


class Forecaster(Protocol):
    """A calibrator's view of one residual stream: fold in computed values, predict skipped ones.

    ``degree``: the degree of its forecast in the gap since the last computed step (a forecast of
    degree d errs like gap ** (d + 1); SCM's adaptive policy sizes its gaps by it)."""

    degree: int

    def update(self, history: Any, value: torch.Tensor, step: int) -> Any: ...

    def forecast(self, history: Any, step: int) -> torch.Tensor: ...


@dataclass
class BranchState:
    """Cache state of one CFG branch of one transformer, for the current request."""

    front_entry: torch.Tensor | None = None
    front_residual: torch.Tensor | None = None  # at the last computed step
    span_entry: dict[int, tuple] = field(default_factory=dict)
    span_residual: dict[int, tuple] = field(default_factory=dict)  # plain: (hidden, encoder); calibrated: histories
    hit: bool = False
    step: int = -1  # index of the current call within the request
    calls: int = 0
    cached_steps: int = 0
    continuous_cached: int = 0
    mask: list[str] = field(default_factory=list)
    rule: Any = None  # the decision rule's own per-branch signal state


class DecisionRule(Protocol):
    """Decides, per transformer call and CFG branch, whether the middle blocks are reused.

    ``entry`` is the first block's ``(module, args, kwargs)`` when the decision is taken before
    it runs (Fn = 0); ``front_residual`` is the Fn residual otherwise (None with Fn = 0).
    """

    def new_request(self, cache: "BlockCache") -> None: ...

    def should_hit(self, cache: "BlockCache", state: BranchState, step: int,
                   front_residual: torch.Tensor | None, entry: tuple | None) -> bool: ...


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor in it: dataclass fields (set in place),
    dicts, lists and tuples are followed; anything else is kept as it is."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {key: map_tensors(item, fn) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [map_tensors(item, fn) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            setattr(value, f.name, map_tensors(getattr(value, f.name), fn))
    return value


def slice_rows(value: Any, rows: torch.Tensor | slice, batch: int) -> Any:
    """``value`` with every tensor whose first dimension is the batch (``batch`` long) cut to
    ``rows``; tuples, lists and dicts are followed, anything else (a rotary embedding shared by
    the batch, a flag) is kept as it is."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.dim() > 0 and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {key: slice_rows(item, rows, batch) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [slice_rows(item, rows, batch) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def forward_rows(forward: Callable, pattern: Any, args: tuple, kwargs: dict, computing: list[int],
                 hidden: torch.Tensor, encoder: torch.Tensor | None) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
    """``per_sample``: a block's ``forward`` run for the rows ``computing`` of its call only (a
    sub-batch cut from ``args`` / ``kwargs``; every row: the call as it is), scattered into
    ``hidden`` / ``encoder``, which hold the other rows' outputs already (their input plus their
    cached residual). The block's output, its hidden states and encoder states."""
    batch = hidden.shape[0]
    if len(computing) == batch:
        output = forward(*args, **kwargs)
        return (output, *pattern.read_outputs(output))
    rows = torch.tensor(computing, device=hidden.device)
    sub_hidden, sub_encoder = pattern.read_outputs(forward(*slice_rows(args, rows, batch), **slice_rows(kwargs, rows, batch)))
    out_hidden = hidden.clone()
    out_hidden[rows] = sub_hidden
    out_encoder = encoder
    if encoder is not None and sub_encoder is not None:
        out_encoder = encoder.clone()
        out_encoder[rows] = sub_encoder
    return pattern.make_output(out_hidden, out_encoder), out_hidden, out_encoder


def relative_l1(current: torch.Tensor, previous: torch.Tensor, group: Any = None) -> float:
    """mean|current - previous| / mean|previous| (inf when previous is zero and current is not).

    ``group`` (a :class:`~dit_engine.parallel.collectives.SequenceGroup`): the tensors are this
    rank's shard of a sequence spread over the group; both sums are reduced over it, so every rank
    gets the value of the whole tensor (for a tensor every rank holds whole, the ratio is the same).
    """
    if group is not None and group.size > 1:
        import torch.distributed as dist

        sums = torch.stack([(current - previous).abs().sum(), previous.abs().sum()]).double()
        with group.stats.measure(sums.device, sums.numel() * sums.element_size() * (group.size - 1)):
            dist.all_reduce(sums, group=group.group)
        change, scale = sums[0], sums[1]
        return float(change / scale) if scale > 0 else float(change > 0) * float("inf")
    scale = previous.abs().mean()
    change = (current - previous).abs().mean()
    return float(change / scale) if scale > 0 else float(change > 0) * float("inf")


class BlockCache:
    """Decisions, residuals and counters of one block cache over one transformer."""

    def __init__(self, name: str, config: BlockCacheConfig, rule: DecisionRule, step_state: StepState,
                 lists: list[tuple[str, int, int]]):
        self.name = name
        self.config = config
        self.rule = rule
        self.step_state = step_state
        # (block-list path, blocks in list, front+back blocks in list, i.e. computed on a hit)
        self.lists = lists
        self.forecaster: Forecaster | None = None
        #: the sequence group of a context-parallel plan: decision statistics are reduced over it
        self.group: Any = None
        #: keyed by CFG branch, or by (branch, sample) with ``per_sample``
        self.branches: dict[Any, BranchState] = {}
        #: with ``per_sample``: the current call's decision per sample, and its front blocks' input
        self.row_hits: list[bool] = []
        #: ``per_sample``: the row being decided (for a rule that reads the call's inputs, such as
        #: SeaCache's latent) and the rows of the call; None outside :meth:`decide_samples`
        self.deciding_row: int | None = None
        self.deciding_rows = 0
        self.row_front_entry: torch.Tensor | None = None
        self.span_entry_rows: dict[int, tuple] = {}
        self.reset_stats()
        step_state.on_request(self.new_request)

    def new_request(self) -> None:
        for key, state in self.branches.items():
            if state.mask:
                self.masks.setdefault(branch_of(key), []).append("".join(state.mask))
        self.branches.clear()
        self.rule.new_request(self)

    def reset_stats(self) -> None:
        self.samples_total = self.samples_cached = 0  # per_sample: decisions taken, and hits
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

    def sample_states(self, batch: int) -> list[BranchState]:
        """``per_sample``: the state of each sample of this call's CFG branch."""
        branch = self.step_state.branch
        return [self.branches.setdefault((branch, row), BranchState()) for row in range(batch)]

    # -- helpers for decision rules -------------------------------------------------------

    def may_cache(self, state: BranchState, step: int) -> bool:
        """The limits every rule obeys: warm-up, a stored residual, max cached (in a row)."""
        c = self.config
        return (
            step >= c.warmup_steps
            and len(state.span_residual) > 0
            and (c.max_cached_steps < 0 or state.cached_steps < c.max_cached_steps)
            and (c.max_continuous_cached_steps < 0 or state.continuous_cached < c.max_continuous_cached_steps)
        )

    def follows_leader(self) -> bool:
        """Whether this call copies CFG branch 0's decision (``separate_cfg=false``)."""
        return self.config.separate_cfg is False and self.step_state.branch > 0

    def leader_hit(self, step: int) -> bool:
        leader = self.branches.get(0)
        return leader is not None and leader.step == step and leader.hit

    # -- called by the hooks ----------------------------------------------------------------

    def _decide_state(self, state: BranchState, front_residual: torch.Tensor | None, entry: tuple | None) -> bool:
        """The rule's decision for ``state`` (a branch, or one sample of it), and its bookkeeping."""
        step = state.step = state.calls
        state.calls += 1
        hit = self.rule.should_hit(self, state, step, front_residual, entry)
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
        return hit

    def _count(self, hit: bool) -> None:
        """Counters of one transformer call: a call whose middle blocks ran for any sample counts
        them as computed (block forward calls, as the blocks saw them)."""
        branch = self.step_state.branch
        self.steps_total[branch] = self.steps_total.get(branch, 0) + 1
        self.steps_cached[branch] = self.steps_cached.get(branch, 0) + int(hit)
        for path, count, always in self.lists:
            self.blocks_total[path] += count
            self.blocks_computed[path] += always if hit else count

    def decide(self, state: BranchState, front_residual: torch.Tensor | None, entry: tuple | None = None) -> None:
        """Hit (reuse or forecast the middle) or compute; ``front_residual`` is None when Fn = 0."""
        self._count(self._decide_state(state, front_residual, entry))

    def decide_samples(self, states: list[BranchState], front_residual: torch.Tensor | None, entry: tuple | None,
                       batch: int) -> None:
        """``per_sample``: each sample's decision from its own slice of the probe (the Fn
        residual, or the first block's arguments); the call counts as cached only when every
        sample hits."""
        hits = []
        self.deciding_rows = len(states)
        for row, state in enumerate(states):
            index = slice(row, row + 1)
            residual = front_residual[index] if front_residual is not None else None
            sample_entry = None if entry is None else (entry[0], slice_rows(entry[1], index, batch), slice_rows(entry[2], index, batch))
            self.deciding_row = row
            hits.append(self._decide_state(state, residual, sample_entry))
        self.deciding_row = None
        self.row_hits = hits
        self.row_front_entry = None
        self.samples_total += len(hits)
        self.samples_cached += sum(hits)
        self._count(all(hits))

    def store_span(self, state: BranchState, span: int, hidden: torch.Tensor, encoder: torch.Tensor | None) -> None:
        """Keep a computed middle-span residual (folded into the forecaster's history if bound)."""
        if span == 0 and span in state.span_residual and self._wants_forecast_error(state):
            self._report_forecast_error(state, hidden)
        if self.forecaster is None:
            state.span_residual[span] = (hidden, encoder)
            return
        old_hidden, old_encoder = state.span_residual.get(span, (None, None))
        new_hidden = self.forecaster.update(old_hidden, hidden, state.step)
        new_encoder = self.forecaster.update(old_encoder, encoder, state.step) if encoder is not None else None
        state.span_residual[span] = (new_hidden, new_encoder)

    def _wants_forecast_error(self, state: BranchState) -> bool:
        return isinstance(self.rule, ForecastErrorRule) and self.rule.wants_forecast_error(state)

    def _report_forecast_error(self, state: BranchState, computed: torch.Tensor) -> None:
        """Tell the rule how far off a forecast of this computed step would have been (relative
        L1 of the first span, from the history before this step): the adaptive policy's signal."""
        stored = state.span_residual[0][0]
        forecast = self.forecaster.forecast(stored, state.step) if self.forecaster is not None else stored
        if forecast.shape == computed.shape:
            self.rule.forecast_error(state, state.step, relative_l1(computed, forecast, self.group))

    def span_delta(self, state: BranchState, span: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The residual a hit adds for ``span``: the stored one or its forecast."""
        hidden, encoder = state.span_residual[span]
        if self.forecaster is None:
            return hidden, encoder
        forecast = self.forecaster.forecast
        return forecast(hidden, state.step), (forecast(encoder, state.step) if encoder is not None else None)

    def stats(self) -> dict:
        masks = {b: list(m) for b, m in self.masks.items()}
        for key, state in self.branches.items():  # the request still in progress
            if state.mask:
                masks.setdefault(branch_of(key), []).append("".join(state.mask))
        computed, total = sum(self.blocks_computed.values()), sum(self.blocks_total.values())
        return {
            "blocks_computed": computed,
            "blocks_total": total,
            "blocks_skipped": total - computed,
            "steps_cached": sum(self.steps_cached.values()),
            "steps_total": sum(self.steps_total.values()),
            **({"samples_cached": self.samples_cached, "samples_total": self.samples_total} if self.config.per_sample else {}),
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


def branch_of(key: Any) -> int:
    """The CFG branch of a state's key (a branch, or ``(branch, sample)``)."""
    return key[0] if isinstance(key, tuple) else key


class BlockCacheHook(StatefulHook):
    """The hook on one block; its role flags say what it does in the sequence."""

    def __init__(self, cache: BlockCache, pattern: BlockPattern, *, first: bool, front_exit: bool,
                 span: int | None, span_first: bool, span_last: bool):
        super().__init__(cache)
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


class SampleBlockCacheHook(BlockCacheHook):
    """:class:`BlockCacheHook` with a decision per sample (``per_sample``): the samples that
    compute run the block as a sub-batch; the others pass their input through, the first middle
    block of a list adding their own stored (or forecast) span residual. A call where every sample
    agrees runs exactly as the whole-batch hook does."""

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        pattern = self.pattern
        hidden, encoder = pattern.read_inputs(args, kwargs)
        batch = hidden.shape[0]
        states = cache.sample_states(batch)
        if self.decide_on_entry:
            cache.decide_samples(states, None, (module, args, kwargs), batch)
        if self.span is None:  # a front block: records the front input or decides at its end
            if self.first:
                cache.row_front_entry = hidden
            output = self.fn_ref.original_forward(*args, **kwargs)
            if self.front_exit:
                cache.decide_samples(states, pattern.read_outputs(output)[0] - cache.row_front_entry, None, batch)
            return output
        hits = cache.row_hits
        computing = [row for row, hit in enumerate(hits) if not hit]
        if self.span_first:
            cache.span_entry_rows[self.span] = (hidden, encoder)
            hidden, encoder = self._add_deltas(states, hits, hidden, encoder)
        if not computing:
            return pattern.make_output(hidden, encoder)
        output, out_hidden, out_encoder = forward_rows(self.fn_ref.original_forward, pattern, args, kwargs, computing,
                                                       hidden, encoder)
        if self.span_last:
            entry_hidden, entry_encoder = cache.span_entry_rows.pop(self.span)
            for row in computing:
                one = slice(row, row + 1)
                residual_encoder = None
                if entry_encoder is not None and out_encoder is not None and entry_encoder.shape == out_encoder.shape:
                    residual_encoder = out_encoder[one] - entry_encoder[one]
                cache.store_span(states[row], self.span, out_hidden[one] - entry_hidden[one], residual_encoder)
        return output

    def _add_deltas(self, states, hits, hidden, encoder):
        """The input with each hitting sample's own span residual added."""
        if not any(hits):
            return hidden, encoder
        hidden = hidden.clone()
        encoder = encoder.clone() if encoder is not None else None
        for row, hit in enumerate(hits):
            if hit:
                delta_hidden, delta_encoder = self.cache.span_delta(states[row], self.span)
                hidden[row:row + 1] = hidden[row:row + 1] + delta_hidden
                if encoder is not None and delta_encoder is not None:
                    encoder[row:row + 1] = encoder[row:row + 1] + delta_encoder
        return hidden, encoder


def block_sequence(block_lists: list[tuple[BlockSpec, torch.nn.ModuleList]]) -> list[tuple[BlockSpec, torch.nn.Module]]:
    """The block lists of a transformer flattened into one sequence of ``(spec, block)``."""
    return [(spec, block) for spec, blocks in block_lists for block in blocks]


def install_block_cache(name: str, block_lists: list[tuple[BlockSpec, torch.nn.ModuleList]], config: BlockCacheConfig,
                        rule: DecisionRule, step_state: StepState) -> tuple[BlockCache, list[torch.nn.Module]]:
    """Hook the blocks of one transformer; return its cache and the hooked blocks (for removal)."""
    sequence = block_sequence(block_lists)
    total = len(sequence)
    front, back = config.front_blocks, config.back_blocks
    middle = range(front, total - back)

    lists = []
    position = 0
    for spec, blocks in block_lists:
        always = sum(1 for i in range(position, position + len(blocks)) if i not in middle)
        lists.append((spec.path, len(blocks), always))
        position += len(blocks)
    cache = BlockCache(name, config, rule, step_state, lists)

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
        hook_class = SampleBlockCacheHook if config.per_sample else BlockCacheHook
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook_class(cache, spec.pattern, **roles), HOOK_NAME)
        hooked.append(block)
    return cache, hooked


class ModelOutputHook(StatefulHook):
    """Model-level step skipping: on a cached step the whole transformer call is answered with the
    output of the last computed step, or its forecast when a calibrator is bound. No block, no
    embedding and no output layer runs, so the wall speedup approaches 1 / compute fraction.
    """

    #: how a stored tensor becomes the transformer's sample again (None: it is one tensor; else
    #: the container type and shapes of a per-sample list, as Z-Image returns)
    layout: Any = None

    def new_forward(self, module, *args, **kwargs):
        cache = self.cache
        state = cache.current()
        cache.decide(state, None)
        if state.hit:
            sample = _unflatten_sample(cache.span_delta(state, 0)[0], self.layout)
            if not kwargs.get("return_dict", True):
                return (sample,)
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=sample)
        output = self.fn_ref.original_forward(*args, **kwargs)
        sample = output[0] if isinstance(output, tuple) else output.sample
        flat, self.layout = _flatten_sample(sample)
        cache.store_span(state, 0, flat, None)
        return output


def _flatten_sample(sample: Any) -> tuple[torch.Tensor, Any]:
    """One tensor for a transformer's sample (a list of per-sample tensors is concatenated, so
    calibrators forecast it like any other), and how to rebuild it."""
    if isinstance(sample, (list, tuple)):
        return torch.cat([t.reshape(-1) for t in sample]), (type(sample), [t.shape for t in sample])
    return sample, None


def _unflatten_sample(flat: torch.Tensor, layout: Any) -> Any:
    if layout is None:
        return flat
    kind, shapes = layout
    parts = flat.split([shape.numel() for shape in shapes])
    return kind(part.view(shape) for part, shape in zip(parts, shapes))


def install_output_cache(name: str, transformer: torch.nn.Module, block_lists: list[tuple[BlockSpec, torch.nn.ModuleList]],
                         config: BlockCacheConfig, rule: DecisionRule, step_state: StepState) -> tuple[BlockCache, list[torch.nn.Module]]:
    """Hook one transformer for model-level step skipping; return its cache and the hooked module."""
    lists = [(spec.path, len(blocks), 0) for spec, blocks in block_lists]
    cache = BlockCache(name, config, rule, step_state, lists)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(ModelOutputHook(cache), HOOK_NAME)
    return cache, [transformer]


def family_threshold(thresholds: dict[str, float], large_dit: float, adapter: Any) -> dict[str, float]:
    """A block cache's default ``{"threshold": ...}`` for ``adapter``'s family: its entry in the
    technique's ``thresholds`` table (by adapter name), else ``large_dit`` for any diffusers DiT
    (a :class:`DiffusersAdapter`, plugins included), else none (the check then asks for
    ``cache.threshold``)."""
    if adapter.name in thresholds:
        return {"threshold": thresholds[adapter.name]}
    if isinstance(adapter, DiffusersAdapter):
        return {"threshold": large_dit}
    return {}


class BlockCacheTransform(Transform):
    """Base of the block caches: installs a :class:`BlockCache` with the technique's decision rule
    on every transformer of the pipeline (:class:`ForecastableBlockCache` lets calibrators bind).

    A technique module subclasses it with its config class, its ``check`` / ``describe`` and
    ``make_rule``; ``model_level`` caches answer whole transformer calls (``install_output_cache``).
    """

    #: Fn = 0 is allowed only when the rule decides before the first block (no probe residual).
    min_front_blocks: int = 1
    #: why ``cache.per_sample=true`` is refused for this cache (a one-line fix), or None: it can
    per_sample_refused: ClassVar[str | None] = None
    #: the name its hooks are registered under (removed by it)
    hook_name: str = HOOK_NAME

    @classmethod
    def adjust_config(cls, config: BlockCacheConfig, node: Any) -> BlockCacheConfig:
        """A null threshold, filled from the family defaults, becomes the family default times
        ``threshold_scale`` (how the presets ``dbcache_fast`` / ``dbcache_slow`` stay relative to
        each model's default)."""
        if node.get("threshold") is None and config.threshold is not None:
            config.threshold = config.threshold * config.threshold_scale
        return config

    @classmethod
    def block_problems(cls, config: BlockCacheConfig, context: Any, needs_threshold: bool = True) -> list[str]:
        """The checks every block cache shares (block counts, threshold, limits)."""
        problems = []
        total = context.model_info.total_blocks
        if config.front_blocks < cls.min_front_blocks:
            problems.append(
                f"cache.front_blocks={config.front_blocks}: this cache decides from the front blocks' residual and needs "
                "at least 1; use cache.front_blocks=1 (or cache=scm_static for steps decided without probing)"
            )
        problems += config.value_problems()
        if config.front_blocks + config.back_blocks >= total:
            problems.append(
                f"cache.front_blocks + cache.back_blocks = {config.front_blocks + config.back_blocks} leaves no middle block to "
                f"cache in this model's {total} blocks; keep their sum below {total}"
            )
        if needs_threshold and config.threshold is None:
            problems.append(f"cache.threshold has no default for model '{context.adapter.name}'; set cache.threshold=<value>, e.g. 0.08")
        if config.per_sample:
            problems += cls.per_sample_problems(config, context)
        return problems

    @classmethod
    def per_sample_problems(cls, config: BlockCacheConfig, context: Any) -> list[str]:
        """Why ``cache.per_sample=true`` cannot run with this plan (each a one-line fix)."""
        problems = [cls.per_sample_refused] if cls.per_sample_refused else []
        if context.dims.cfg > 1:  # the ranks hold different samples: rows would not name the same sample
            problems.append("cache.per_sample=true does not combine with CFG parallel (parallel.cfg_degree>1) yet: "
                            "use Ulysses / Ring / tensor parallel, or drop cache.per_sample")
        if config.separate_cfg is False:
            problems.append("cache.per_sample=true decides each sample on its own; it cannot follow CFG branch 0 "
                            "(cache.separate_cfg=false): drop one of them")
        return problems

    @classmethod
    def batch_invariant(cls, config: BlockCacheConfig) -> bool:
        """With ``per_sample`` every sample decides from its own signal alone."""
        return bool(config.per_sample) and cls.per_sample_refused is None

    @classmethod
    def check(cls, config: Any, context: Any) -> list[str]:
        return cls.block_problems(config, context)

    def make_rule(self, transformer: str, context: ApplyContext) -> DecisionRule:
        """The decision rule for the cache over ``transformer``."""
        raise NotImplementedError

    def model_level(self) -> bool:
        """Whether a hit answers the whole transformer call (nothing runs)."""
        return False

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.caches: list[BlockCache] = []
        self.hooked: list[torch.nn.Module] = []
        self.constant_modules = []  # what does not change between steps runs once per request
        self.sequence_group = context.sequence_group
        for name, transformer in context.transformers.items():
            lists = context.adapter.block_lists(transformer)
            rule = self.make_rule(name, context)
            if self.model_level():
                cache, hooked = install_output_cache(name, transformer, lists, self.config, rule, context.step_state)
            else:
                cache, hooked = install_block_cache(name, lists, self.config, rule, context.step_state)
                self.constant_modules += memoize_constant_modules(transformer, context.step_state)
            cache.group = context.sequence_group
            self.caches.append(cache)
            self.hooked.extend(hooked)

    def split_batch(self, shard: Callable[[torch.Tensor], torch.Tensor] | None, group: Any) -> None:
        """CFG parallel now gives this rank its part of the batch: keep that part of every stored
        residual, forecaster history and signal, and reduce the decision statistics over the whole
        batch (``group``), so each rank decides as one process does on the whole batch."""
        for cache in self.caches:
            cache.group = self.sequence_group if shard is None else group
            if shard is not None:
                for state in cache.branches.values():
                    map_tensors(state, shard)

    def remove(self, pipe: Any) -> None:
        for module in self.hooked:
            remove_hook(module, self.hook_name)
        forget_constant_modules(self.constant_modules)
        self.hooked, self.constant_modules = [], []

    def reset_stats(self) -> None:
        for cache in self.caches:
            cache.reset_stats()
        for _, memo in self.constant_modules:
            memo.reused_total = 0

    def stats(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"blocks_computed": 0, "blocks_total": 0, "blocks_skipped": 0,
                                  "steps_cached": 0, "steps_total": 0, "block_lists": {}, "branches": {},
                                  "constant_module_calls_reused": sum(m.reused_total for _, m in self.constant_modules)}
        for cache in self.caches:
            stats = cache.stats()
            for key in ("blocks_computed", "blocks_total", "blocks_skipped", "steps_cached", "steps_total"):
                merged[key] += stats[key]
            for key in ("samples_cached", "samples_total"):
                if key in stats:
                    merged[key] = merged.get(key, 0) + stats[key]
            merged["block_lists"].update(stats["block_lists"])
            merged["branches"].update(stats["branches"])
        return merged


class ForecastableBlockCache(BlockCacheTransform):
    """A block cache whose stored residuals a calibrator may forecast (:class:`ForecastTarget`)."""

    def bind_forecaster(self, forecaster: Forecaster) -> None:
        """Cached steps use ``forecaster``'s prediction of each residual instead of the stale one."""
        for cache in self.caches:
            cache.forecaster = forecaster

    def unbind_forecaster(self) -> None:
        for cache in self.caches:
            cache.forecaster = None


class WholeStepBlockCache(ForecastableBlockCache):
    """A forecastable block cache that skips the whole block stack: Fn = Bn = 0, decided before
    the first block runs (TeaCache, MagCache, SeaCache)."""

    min_front_blocks = 0

    @classmethod
    def adjust_config(cls, config: BlockCacheConfig, node: Any) -> BlockCacheConfig:
        config = super().adjust_config(config, node)
        config.front_blocks = config.back_blocks = 0
        return config
