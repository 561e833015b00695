"""CogView4 adapter (diffusers ``CogView4Pipeline`` and ``CogView4ControlPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class CogView4Adapter(DiffusersAdapter):
    """CogView4: one list of dual-stream blocks called with positional arguments only (hidden,
    encoder, temb, rotary, mask, attention kwargs), returning ``(hidden, encoder)`` (pattern D).

    The pipelines make separate cond and uncond calls while ``guidance_scale > 1``.
    """

    name = "cogview4"
    default_pretrained = "THUDM/CogView4-6B"
    pipeline_classes = (
        "CogView4Pipeline",
        "CogView4ControlPipeline",
    )
    block_specs = (BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),)
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "CogView4Transformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers"}
    #: VAE 8x spatial x patch 2
    size_multiple = 16
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=32,
                             source="CogView4-6B defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A vibrant cherry red sports car on a winding mountain road"],
                                        num_inference_steps=50, guidance_scale=3.5)
