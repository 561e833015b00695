"""``quant=``'s config dataclass (the schema) and its enums.

Torch-free: Hydra composes (and ``--help``, shell completion and the config checks read) these
schemas without importing torch; the transforms that use them import them from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

class Scheme(enum.StrEnum):
    """``quant.scheme``: the torchao scheme (devices in the module docstring)."""

    int8_weight_only = "int8_weight_only"
    int8_dynamic = "int8_dynamic"
    fp8_weight_only = "fp8_weight_only"
    fp8_dynamic = "fp8_dynamic"
    int4_weight_only = "int4_weight_only"
    intx_weight_only = "intx_weight_only"


class Granularity(enum.StrEnum):
    """``quant.granularity``: fp8_dynamic's activation/weight scales."""

    per_row = "per_row"
    per_tensor = "per_tensor"


@dataclass
class QuantConfig:
    """``quant=``: which scheme, on which layers. The ``quant=<scheme>`` presets set ``scheme``
    (and their scheme's own keys where they differ from the defaults below).

    Attributes:
        name: transform implementation (``torchao``).
        scheme: one of int8_weight_only, int8_dynamic, fp8_weight_only, fp8_dynamic,
            int4_weight_only, intx_weight_only (see the module docstring for devices).
        granularity: fp8_dynamic only: its activation/weight scales, per_row (default) or per_tensor.
        bits: intx_weight_only only: its weight bits (1-8; 4 by default).
        targets: globs of transformer module names to quantize; null: every linear layer in the
            adapter's block lists.
        exclude: globs of module names left in full precision (applied after ``targets``); by
            default the AdaLN modulation layers inside norms (``*norm*``).
        text_encoder: also quantize the text encoders' linear layers.
    """

    name: str = "torchao"
    scheme: Scheme = Scheme.int8_weight_only
    # scheme-specific keys: each read by one scheme only, ignored by the others
    granularity: Granularity = Granularity.per_row  # fp8_dynamic
    bits: int = 4  # intx_weight_only
    # every scheme: which layers
    targets: Optional[list[str]] = None
    exclude: list[str] = field(default_factory=lambda: ["*norm*"])
    text_encoder: bool = False
