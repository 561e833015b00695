"""HunyuanImage-2.1 adapter (diffusers ``HunyuanImagePipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanImageAdapter(DiffusersAdapter):
    """HunyuanImage-2.1: Dual-stream then single-stream blocks (three positional arguments and keywords), returning ``(hidden, encoder)``; separate cond / uncond calls through its guider."""

    name = "hunyuan_image"
    pipeline_classes = (
        "HunyuanImagePipeline",
        "HunyuanImageRefinerPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "HunyuanImageTransformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    size_multiple = 32
    default_info = ModelInfo(blocks={"transformer_blocks": 20, "single_transformer_blocks": 40}, num_heads=28, source="HunyuanImageTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A cute penguin wearing a knitted scarf'], num_inference_steps=50, guidance_scale=3.5)
