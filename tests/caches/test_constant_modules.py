"""What does not change between steps runs once per request: the rotary embedding of the token ids
and the prompt's projection are reused on the embedded model, the latents' modules are not, the
outputs stay bit-identical, and a tensor changed in place is never answered from the memo."""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry

import dit_engine
from dit_engine.caches.constant_modules import ConstantMemo, ConstantModuleHook, HOOK_NAME
from dit_engine.steps import StepState
from test_dbcache import run_tiny


def test_request_constant_modules_run_once_per_request(tiny_pipe):
    reference = run_tiny(tiny_pipe)  # 28 steps
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache", "cache.threshold=0")
    try:
        assert torch.equal(run_tiny(tiny_pipe), reference)
        memos = {type(module).__name__ + str(i): memo.reused_total
                 for i, (module, memo) in enumerate(next(t for t in handle.transforms if hasattr(t, "constant_modules")).constant_modules)}
        reused = {name.rstrip("0123456789") for name, count in memos.items() if count == 27}
        assert "FluxPosEmbed" in reused  # the ids are the same at every step
        assert not any(name.startswith("AdaLayerNormContinuous") and count for name, count in memos.items())  # latents change
        assert handle.summary()["transforms"]["cache.dbcache"]["constant_module_calls_reused"] == sum(memos.values())
    finally:
        handle.remove()
    assert not hasattr(tiny_pipe.transformer.pos_embed, "_diffusers_hook")  # removal leaves the module as it was


class _Double(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 2


def test_a_tensor_changed_in_place_is_computed_again():
    module, state = _Double(), StepState()
    HookRegistry.check_if_exists_or_initialize(module).register_hook(ConstantModuleHook(ConstantMemo(state)), HOOK_NAME)
    x = torch.ones(3)
    with torch.no_grad():
        first = module(x)
        assert module(x) is first and module.calls == 1  # same input: answered from the memo
        x.add_(1)  # same tensor object, new values
        assert torch.equal(module(x), torch.full((3,), 4.0)) and module.calls == 2
        first.mul_(0)  # the output a caller changed is never handed out again
        state.start_request()
        out = module(x)
        out.mul_(0)
        assert torch.equal(module(x), torch.full((3,), 4.0))
