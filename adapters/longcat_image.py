"""LongCat-Image adapter (diffusers ``LongCatImagePipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockSpec, ModelInfo, WorkloadDefaults, flux_modulated_input
from dit_engine.diffusers_adapter import DiffusersAdapter


class LongCatImageAdapter(DiffusersAdapter):
    """LongCat-Image (6B): FLUX-style, 10 dual-stream and 20 single-stream blocks, both taking and
    returning ``(encoder, hidden)``; separate cond / uncond calls when ``guidance_scale > 1``."""

    name = "longcat_image"
    default_pretrained = "meituan-longcat/LongCat-Image"
    pipeline_classes = (
        "LongCatImagePipeline",
        "LongCatImageEditPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
    )
    teacache_probe = staticmethod(flux_modulated_input)
    transformer_class = "LongCatImageTransformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 10, "single_transformer_blocks": 20}, num_heads=24,
                             source="LongCat-Image defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A cat sitting on a windowsill at sunset'], num_inference_steps=50, guidance_scale=4.5)
