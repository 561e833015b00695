"""CogView4 adapter (diffusers ``CogView4Pipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class CogView4Adapter(DiffusersAdapter):
    """CogView4: Dual-stream blocks called with positional arguments only, returning ``(hidden, encoder)``; separate cond / uncond calls."""

    name = "cogview4"
    pipeline_classes = (
        "CogView4Pipeline",
        "CogView4ControlPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "CogView4Transformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 30}, num_heads=64, source="CogView4Transformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A vibrant cherry red sports car on a winding mountain road'], num_inference_steps=50, guidance_scale=3.5)
