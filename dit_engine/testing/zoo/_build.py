"""Small helpers the zoo builders share: seeded construction, random embeddings, call kwargs."""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.testing._common import _finish, _generator, _seeded

__all__ = ["seeded_module", "embeds", "generator", "flow_match_scheduler"]


def seeded_module(cls: type, seed: int = 0, component: int = 0, **config: Any) -> torch.nn.Module:
    """``cls(**config)`` with seeded random weights, in ``eval()`` mode (float32, CPU)."""
    with _seeded(seed, component):
        module = cls(**config)
    return _finish(module)


def embeds(*shape: int, seed: int = 1) -> torch.Tensor:
    """A reproducible random tensor (prompt embeddings and the like), independent of global RNG."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def generator(seed: int = 0) -> torch.Generator:
    """A fresh CPU generator: every call of a case needs its own."""
    return _generator(seed)


def flow_match_scheduler(**config: Any):
    """``FlowMatchEulerDiscreteScheduler`` (the scheduler of most rectified-flow DiTs)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)
