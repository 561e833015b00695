"""CFG parallel for pipelines that call the transformer once per CFG branch (Flux true CFG, Wan,
Qwen-Image, the embedded model).

The branches come as two calls in a row, so rank 0 of the ``cfg`` group cannot start the
conditional branch while rank 1 computes the unconditional one unless the first call waits: call
0 of a step returns a placeholder of last step's output shape and keeps its inputs; at call 1 each
rank computes its own branch (rank 0 the kept inputs, rank 1 the new ones), the two outputs are
exchanged, and the placeholder is filled in place before the pipeline reads it (pipelines only
combine the branches after the second call). The first step runs both branches on every rank (it
learns the output shape), and a kept call that no second call follows is computed before the
scheduler step reads it, so a step with one call stays correct.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import ModelHook

from dit_engine.parallel.collectives import SequenceGroup
from dit_engine.steps import StepState


def _sample(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _as_output(sample: torch.Tensor, kwargs: dict) -> Any:
    if not kwargs.get("return_dict", True):
        return (sample,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


class CfgParallelHook(ModelHook):
    """Defers CFG branch 0 to the second call of the step and computes one branch per rank."""

    def __init__(self, group: SequenceGroup, step_state: StepState):
        super().__init__()
        self.group = group
        self.step_state = step_state
        self.pending: tuple | None = None
        self.shape: tuple | None = None
        step_state.before_step(self.flush)
        step_state.on_request(self.new_request)

    def new_request(self) -> None:
        self.pending = None
        self.shape = None

    def flush(self) -> None:
        """Compute a kept branch-0 call that no branch-1 call followed, into its placeholder."""
        if self.pending is None:
            return
        module, args, kwargs, placeholder = self.pending
        self.pending = None
        placeholder.copy_(_sample(self._run_as_branch(0, module, args, kwargs)))

    def _run_as_branch(self, branch: int, module, args, kwargs) -> Any:
        actual = self.step_state.branch
        self.step_state.branch = branch  # the caches below keep this branch's state
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.step_state.branch = actual

    def new_forward(self, module, *args, **kwargs):
        branch = self.step_state.branch
        if branch == 0:
            self.flush()
            if self.shape is None:
                output = self.fn_ref.original_forward(*args, **kwargs)
                sample = _sample(output)
                self.shape = (tuple(sample.shape), sample.dtype, sample.device)
                return output
            shape, dtype, device = self.shape
            placeholder = torch.empty(shape, dtype=dtype, device=device)
            self.pending = (module, args, kwargs, placeholder)
            return _as_output(placeholder, kwargs)
        if branch == 1 and self.pending is not None:
            _, args0, kwargs0, placeholder = self.pending
            self.pending = None
            if self.group.rank == 0:
                mine = _sample(self._run_as_branch(0, module, args0, kwargs0))
            else:
                mine = _sample(self.fn_ref.original_forward(*args, **kwargs))
            both = self.group.gather(mine.unsqueeze(0).contiguous(), 0)
            placeholder.copy_(both[0])
            return _as_output(both[1].clone(), kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)
