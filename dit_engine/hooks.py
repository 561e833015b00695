"""Helpers around diffusers' HookRegistry so removal leaves modules exactly as they were."""

from __future__ import annotations

import torch


def remove_hook(module: torch.nn.Module, name: str) -> None:
    """Remove hook ``name`` from ``module``; drop the registry and forward override when empty.

    diffusers' ``remove_hook`` restores behaviour but leaves an empty registry and an instance
    ``forward`` attribute behind; deleting both gives back the module as it was before any hook.
    """
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None:
        return
    registry.remove_hook(name, recurse=False)
    if not registry.hooks:
        del module._diffusers_hook
        forward = module.__dict__.get("forward")
        if forward is not None and getattr(forward, "__func__", None) is type(module).forward:
            del module.__dict__["forward"]
