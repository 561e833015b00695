"""Skip what does not change between steps: the transformer's modules outside its blocks whose
inputs are the same at every step of a request (rotary position embeddings of the token ids, the
text projection of the prompt embeddings) are run once per request and their output reused.

A cached step of a block cache still runs everything outside the skipped blocks; on small and
mid-size models the rotary embedding alone is 1-2 % of a step, which keeps the wall speedup below
1 / compute fraction. Which modules qualify is not guessed: every top-level module of the
transformer outside its block lists is watched, its inputs are compared with the previous
call's (tensors by value, other arguments by equality), and a module whose inputs changed is
left alone for the rest of the request (the step's latents and timestep change at every step).
The output is reused only while neither it nor the stored inputs were changed in place since
(tensor versions), so the result is the module's own output, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks import HookRegistry

from dit_engine.hooks import StatefulHook, remove_hook
from dit_engine.steps import StepState

HOOK_NAME = "dit_engine.constant_module"


def _same(a: Any, b: Any) -> bool:
    """Whether two call arguments are equal (tensors: same shape, dtype, device and values)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and a.device == b.device and (a is b or torch.equal(a, b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an argument that cannot be compared is not the same
        return False


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


class ConstantMemo:
    """One module's memo for the current request."""

    def __init__(self, step_state: StepState):
        self.reused_total = 0  # calls answered from the memo since the plan was applied
        self.new_request()
        step_state.on_request(self.new_request)

    def new_request(self) -> None:
        self.watching = True
        self.inputs: tuple | None = None
        self.output: Any = None
        self.versions: tuple = ()


class ConstantModuleHook(StatefulHook):
    """Answer a call whose inputs equal the previous call's with the previous output."""

    def new_forward(self, module, *args, **kwargs):
        memo = self.cache
        if not memo.watching or torch.is_grad_enabled():
            return self.fn_ref.original_forward(*args, **kwargs)
        if memo.inputs is not None:
            intact = tuple(t._version for t in _tensors((memo.inputs, memo.output))) == memo.versions
            if intact and _same(memo.inputs, (args, kwargs)):
                memo.reused_total += 1
                return memo.output
            memo.watching = False  # the inputs change between steps: stop comparing them
            memo.inputs = memo.output = None
            return self.fn_ref.original_forward(*args, **kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        memo.inputs, memo.output = (args, kwargs), output
        memo.versions = tuple(t._version for t in _tensors((memo.inputs, output)))
        return output


def memoize_constant_modules(transformer: torch.nn.Module, step_state: StepState) -> list[tuple[torch.nn.Module, ConstantMemo]]:
    """Watch every top-level module of ``transformer`` that is not a block list (nor holds one);
    return the hooked modules with their memos (for removal and the counters)."""
    hooked = []
    for child in transformer.children():
        if isinstance(child, torch.nn.ModuleList) or any(isinstance(m, torch.nn.ModuleList) for m in child.modules()):
            continue
        memo = ConstantMemo(step_state)
        HookRegistry.check_if_exists_or_initialize(child).register_hook(ConstantModuleHook(memo), HOOK_NAME)
        hooked.append((child, memo))
    return hooked


def forget_constant_modules(hooked: list[tuple[torch.nn.Module, ConstantMemo]]) -> None:
    for module, _ in hooked:
        remove_hook(module, HOOK_NAME)
