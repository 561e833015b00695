"""Helpers around diffusers' HookRegistry so removal leaves modules exactly as they were."""

from __future__ import annotations

import torch
from diffusers.hooks import ModelHook

from dit_engine.compat import detach_hook_registry, forget_child_registries, hook_registry


def remove_hook(module: torch.nn.Module, name: str) -> None:
    """Remove hook ``name`` from ``module``; drop the registry and forward override when empty.

    diffusers' ``remove_hook`` restores behaviour but leaves an empty registry and an instance
    ``forward`` attribute behind; deleting both gives back the module as it was before any hook.
    """
    registry = hook_registry(module)
    if registry is None:
        return
    registry.remove_hook(name, recurse=False)
    if not registry.hooks:
        detach_hook_registry(module)
        forward = module.__dict__.get("forward")
        if forward is not None and getattr(forward, "__func__", None) is type(module).forward:
            del module.__dict__["forward"]


def invalidate_registry_caches(module: torch.nn.Module) -> None:
    """Drop every diffusers HookRegistry's cached list of child registries under ``module``.

    diffusers caches, per registry, which descendants carry hooks (to propagate cache contexts);
    adding or removing block hooks stales that list (diffusers #14037), and a later
    ``enable_cache`` or ``cache_context`` would then miss or keep block hooks.
    """
    for _, child in module.named_modules():
        registry = hook_registry(child)
        if registry is not None:
            forget_child_registries(registry)


class StatefulHook(ModelHook):
    """A diffusers hook whose per-request state lives in a shared ``cache`` object.

    ``_is_stateful`` makes ``HookRegistry.reset_stateful_hooks`` (and so diffusers' own cache
    resets) reach it: ``reset_state`` starts a new request on the cache, exactly as the engine's
    step state does at ``scheduler.set_timesteps``. Several hooks may share one cache; resetting
    it twice is the same as once.
    """

    _is_stateful = True

    def __init__(self, cache):
        super().__init__()
        self.cache = cache

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.cache.new_request()
        return module
