"""CFG parallel: the two CFG branches of every step on different ranks of the ``cfg`` group.

Pipelines run CFG in one of two ways. The adapter's ``cfg_mode`` says so for families that always
make one call per step (``batched``, ``distilled``, ``none``): their batch is split from the first
step. Families with two calls per step whose adapter knows the output's shape without running a
call (:meth:`~dit_engine.adapter.Adapter.cfg_output_shape`: FLUX, Qwen-Image, Wan text-to-video)
are split from the first step too. Otherwise the hook learns the pattern from the first step
(computed whole on every rank):

* **one batched call** (cond and uncond stacked in the batch): each rank computes its half of the
  batch and the halves are gathered back. Which arguments carry the batch is adapter data
  (:attr:`dit_engine.adapter.Adapter.batch_inputs`).
* **two calls in a row** (Flux true CFG, Wan, Qwen-Image): rank 0 cannot start the conditional
  branch while rank 1 computes the unconditional one unless the first call waits, so call 0
  returns a placeholder of last step's output shape and keeps its inputs; at call 1 each rank
  computes its branch (rank 0 the kept inputs, rank 1 the new ones), the outputs are exchanged and
  the placeholder is filled in place before the pipeline combines the branches (pipelines combine
  them only after the second call). A kept call that no second call follows is computed before
  ``scheduler.step`` reads it.

While a rank computes a kept branch-0 call, the step state says branch 0, so every cache below
keeps that branch's own state, as in the single-process run.

The two-call pattern stays learned: the placeholder needs the output's shape, which the first
call gives (or the adapter, from the first step). A first call no second one follows is computed
at the end of the step (the kept-call rule above), so a wrong guess about the pattern costs that
step's split, never a wrong result; a wrong output shape is an error, never a silent one.

A batched pipeline whose pattern was learned computed its first step whole, so the caches below stored whole-batch residuals and histories; when the batch is split (at the end of
that step, or at the first call when the pattern is known), every applied transform takes its part
of what it stored (nothing, at the first call) and reduces its decision statistics over the whole
batch (:meth:`~dit_engine.transforms.base.dit_engine.transforms.protocols.SplitsBatch`), so the ranks decide and
forecast as one process does.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.hooks import ModelHook

from dit_engine.errors import DitEngineError
from dit_engine.parallel.collectives import SequenceGroup
from dit_engine.steps import StepState
from dit_engine.transforms.protocols import SplitsBatch


def _sample(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _checked(sample: torch.Tensor, placeholder: torch.Tensor) -> torch.Tensor:
    """``sample``, which must fill ``placeholder`` exactly (the shape the adapter said)."""
    if sample.shape != placeholder.shape or sample.dtype != placeholder.dtype:
        raise DitEngineError(
            f"CFG parallel returned a placeholder ({tuple(placeholder.shape)}, {placeholder.dtype}) for the first CFG call, "
            f"but the transformer's output is ({tuple(sample.shape)}, {sample.dtype}): the adapter's cfg_output_shape is wrong for this "
            "pipeline; fix it (or make it return None) in the adapter, or drop parallel.cfg_degree"
        )
    return sample


def _as_output(sample: torch.Tensor, kwargs: dict) -> Any:
    if not kwargs.get("return_dict", True):
        return (sample,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


class CfgParallelHook(ModelHook):
    """One CFG branch (or half the batch) per rank of ``group``; see the module docstring."""

    def __init__(self, group: SequenceGroup, step_state: StepState, batch_inputs: tuple[str, ...],
                 transforms: list | None = None, batch_group: SequenceGroup | None = None,
                 one_call_per_step: bool = False, output_shape=None):
        """``transforms``: the plan's applied transforms, told when the batch is split
        (:meth:`dit_engine.transforms.protocols.SplitsBatch`); ``batch_group``: the ranks that together hold the whole
        batch once it is split (the cfg group, times the sequence group when there is one);
        ``one_call_per_step``: the family always makes one transformer call per step (its
        adapter's ``cfg_mode``), so the batch is split from the first step; ``output_shape``:
        ``(transformer, hidden_states) -> shape | None``, the adapter's
        :meth:`~dit_engine.adapter.Adapter.cfg_output_shape` (two-call CFG split from the first step)."""
        super().__init__()
        self.one_call_per_step = one_call_per_step
        self.output_shape = output_shape
        self.group = group
        self.step_state = step_state
        self.batch_inputs = batch_inputs
        self.transforms = transforms if transforms is not None else []
        self.batch_group = batch_group or group
        self.pending: tuple | None = None
        step_state.before_step(self.end_of_step)
        step_state.on_request(self.new_request)
        self.new_request()

    def initialize_hook(self, module):
        self.argument_names = list(inspect.signature(type(module).forward).parameters)[1:]
        return module

    def new_request(self) -> None:
        if getattr(self, "batch_size", None):  # the last request was split: start whole again
            for transform in self.transforms:
                if isinstance(transform, SplitsBatch):
                    transform.split_batch(None, None)
        self.pending = None
        self.shape = None
        self.calls_per_step: int | None = 1 if self.one_call_per_step else None  # else learned at the end of the first step
        self.calls_this_step = 0
        self.first_batch: int | None = None  # the batch of the request's first call
        self.batch_size: int | None = None  # the whole batch, once it is split

    def end_of_step(self) -> None:
        self.flush()
        if self.calls_per_step is None and self.calls_this_step:
            self.calls_per_step = self.calls_this_step
            if self.calls_per_step == 1 and self.first_batch is not None and self.first_batch >= self.group.size:
                self._split_stored_state(self.first_batch)
        self.calls_this_step = 0

    def _split_stored_state(self, size: int) -> None:
        """From the next step each rank holds its part of a batch of ``size``: so must the state
        the transforms below kept from the whole first step."""
        self.batch_size = size

        def shard(tensor: torch.Tensor) -> torch.Tensor:
            return self.group.shard(tensor, 0) if tensor.dim() and tensor.shape[0] == size else tensor

        for transform in self.transforms:
            if isinstance(transform, SplitsBatch):
                transform.split_batch(shard, self.batch_group)

    def flush(self) -> None:
        """Compute a kept branch-0 call that no branch-1 call followed, into its placeholder."""
        if self.pending is None:
            return
        args, kwargs, placeholder = self.pending
        self.pending = None
        placeholder.copy_(_checked(_sample(self._run_as_branch(0, args, kwargs)), placeholder))

    def _run_as_branch(self, branch: int, args, kwargs) -> Any:
        actual = self.step_state.branch
        self.step_state.branch = branch
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.step_state.branch = actual

    def new_forward(self, module, *args, **kwargs):
        self.calls_this_step += 1
        if self.calls_per_step is None and self.calls_this_step == 1:
            batch = self._batch(args, kwargs)
            self.first_batch = batch.shape[0] if isinstance(batch, torch.Tensor) and batch.dim() else None
            if self.shape is None and self.output_shape is not None and isinstance(batch, torch.Tensor):
                known = self.output_shape(module, batch)  # two calls split from the first step
                self.shape = (tuple(known), batch.dtype, batch.device) if known is not None else None
        branch = self.step_state.branch
        if self.calls_per_step == 1:
            return self._split_batch(args, kwargs)
        two_calls = self.calls_per_step == 2 or (self.calls_per_step is None and self.shape is not None)
        if not two_calls or branch > 1:
            output = self.fn_ref.original_forward(*args, **kwargs)
            if branch == 0:
                sample = _sample(output)
                self.shape = (tuple(sample.shape), sample.dtype, sample.device)
            return output
        if branch == 0:
            self.flush()
            shape, dtype, device = self.shape
            placeholder = torch.empty(shape, dtype=dtype, device=device)
            self.pending = (args, kwargs, placeholder)
            return _as_output(placeholder, kwargs)
        if self.pending is None:  # a second call without a kept first one
            return self.fn_ref.original_forward(*args, **kwargs)
        args0, kwargs0, placeholder = self.pending
        self.pending = None
        if self.group.rank == 0:
            mine = _checked(_sample(self._run_as_branch(0, args0, kwargs0)), placeholder)
        else:
            mine = _checked(_sample(self.fn_ref.original_forward(*args, **kwargs)), placeholder)
        both = self.group.gather(mine.unsqueeze(0).contiguous(), 0)
        placeholder.copy_(both[0])
        return _as_output(both[1].clone(), kwargs)

    def _batch(self, args, kwargs) -> Any:
        """The call's ``hidden_states`` (whose first dimension is the batch), or None."""
        if "hidden_states" in kwargs:
            return kwargs["hidden_states"]
        return dict(zip(self.argument_names, args)).get("hidden_states")

    def _split_batch(self, args, kwargs):
        """One call per step: this rank computes its part of the batch; the parts are gathered."""
        batch = self._batch(args, kwargs)
        if not isinstance(batch, torch.Tensor) or batch.shape[0] < self.group.size:
            return self.fn_ref.original_forward(*args, **kwargs)
        size = batch.shape[0]
        if self.batch_size is None:  # the pattern was known: split from this first call
            self._split_stored_state(size)

        def part(name, value):
            if name in self.batch_inputs and isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == size:
                return self.group.shard(value, 0)
            return value

        args = tuple(part(name, value) for name, value in zip(self.argument_names, args))
        kwargs = {name: part(name, value) for name, value in kwargs.items()}
        return _as_output(self.group.gather(_sample(self.fn_ref.original_forward(*args, **kwargs)).contiguous(), 0), kwargs)
