"""Hook helpers: removal leaves a module exactly as before; stateful hooks reset through diffusers."""

from __future__ import annotations

import torch
from diffusers.hooks import HookRegistry, ModelHook

from dit_engine.hooks import StatefulHook, invalidate_registry_caches, remove_hook


class Double(ModelHook):
    def post_forward(self, module, output):
        return output * 2


def test_remove_hook_gives_back_the_module_as_it_was():
    module = torch.nn.Linear(2, 2)
    x = torch.ones(1, 2)
    plain = module(x)
    HookRegistry.check_if_exists_or_initialize(module).register_hook(Double(), "double")
    assert torch.equal(module(x), plain * 2)
    remove_hook(module, "double")
    assert not hasattr(module, "_diffusers_hook") and "forward" not in module.__dict__
    assert torch.equal(module(x), plain)
    remove_hook(module, "double")  # removing again is a no-op


def test_remove_hook_keeps_other_hooks():
    module = torch.nn.Linear(2, 2)
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(Double(), "a")
    registry.register_hook(Double(), "b")
    remove_hook(module, "a")
    assert list(module._diffusers_hook.hooks) == ["b"]


class Cache:
    def __init__(self):
        self.requests = 0

    def new_request(self):
        self.requests += 1


def test_stateful_hooks_reset_through_diffusers_registry():
    parent = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    cache = Cache()
    for child in parent:
        HookRegistry.check_if_exists_or_initialize(child).register_hook(StatefulHook(cache), "dit_engine.test")
    registry = HookRegistry.check_if_exists_or_initialize(parent)
    invalidate_registry_caches(parent)
    registry.reset_stateful_hooks(recurse=True)
    assert cache.requests == 2  # one reset per hook; the cache's new_request is idempotent
