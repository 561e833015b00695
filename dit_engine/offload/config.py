"""``offload=``'s config dataclass (the schema) and its enum.

Torch-free: Hydra composes (and ``--help``, shell completion and the config checks read) these
schemas without importing torch; the transforms that use them import them from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

class OffloadMode(enum.StrEnum):
    """``offload.mode``: which diffusers offload strategy (see the module docstring)."""

    model = "model"
    sequential = "sequential"
    group = "group"


@dataclass
class OffloadConfig:
    """``offload=``: which diffusers offload strategy.

    Attributes:
        name: transform implementation (``diffusers_offload``).
        mode: model, sequential or group (see the module docstring).
        num_blocks_per_group: group mode: blocks moved to the GPU together.
        use_stream: group mode: prefetch the next group on a CUDA stream while one computes.
    """

    name: str = "diffusers_offload"
    mode: OffloadMode = OffloadMode.model
    num_blocks_per_group: int = 1
    use_stream: bool = True
