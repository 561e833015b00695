"""``compile=``'s config dataclass (the schema) and its enums.

Torch-free: Hydra composes (and ``--help``, shell completion and the config checks read) these
schemas without importing torch; the transforms that use them import them from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

class Scope(enum.StrEnum):
    """``compile.scope``: what is compiled (see the module docstring)."""

    regional = "regional"
    full = "full"


#: ``compile.mode``: torch.compile's modes (torch 2.13's ``torch._inductor.list_mode_options()``);
#: built from a mapping because the names hold dashes (member names are what a config spells).
Mode = enum.StrEnum("Mode", {name: name for name in
                             ("default", "lite", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")})


@dataclass
class CompileConfig:
    """``compile=``: what torch.compile compiles, and how.

    Attributes:
        name: transform implementation (``torch_compile``).
        scope: ``regional`` (each transformer block, beneath the caches' hooks) or ``full``.
        mode: torch.compile mode (null / default, reduce-overhead, max-autotune, ...).
        dynamic: torch.compile's ``dynamic`` (null: dynamic after a shape first changes).
        fullgraph: fail on any graph break inside a compiled region (regional: a block).
        backend: torch.compile backend (inductor; eager or aot_eager to debug).
    """

    name: str = "torch_compile"
    scope: Scope = Scope.regional
    mode: Optional[Mode] = None
    dynamic: Optional[bool] = None
    fullgraph: bool = False
    backend: str = "inductor"
