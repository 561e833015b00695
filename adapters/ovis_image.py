"""Ovis-Image adapter (diffusers ``OvisImagePipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockSpec, ModelInfo, WorkloadDefaults, flux_modulated_input
from dit_engine.diffusers_adapter import DiffusersAdapter


class OvisImageAdapter(DiffusersAdapter):
    """Ovis-Image: FLUX-style, 6 dual-stream and 27 single-stream blocks, both taking and returning
    ``(encoder, hidden)``; separate cond / uncond calls when ``guidance_scale > 1``."""

    name = "ovis_image"
    default_pretrained = "AIDC-AI/Ovis-Image-7B"
    pipeline_classes = (
        "OvisImagePipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
    )
    teacache_probe = staticmethod(flux_modulated_input)
    transformer_class = "OvisImageTransformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 6, "single_transformer_blocks": 27}, num_heads=24, source="Ovis-Image-7B defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A creative poster that reads 'Ovis Image' in bold letters"], num_inference_steps=50, guidance_scale=5.0)
