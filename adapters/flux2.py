"""FLUX.2 (dev, klein) adapter (diffusers ``Flux2Pipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class Flux2Adapter(DiffusersAdapter):
    """FLUX.2 (dev, klein): 8 dual-stream blocks returning ``(encoder, hidden)`` (modulated by ``temb_mod_img`` / ``temb_mod_txt``), then 48 single-stream blocks over the joint [text, image] sequence returning one tensor."""

    name = "flux2"
    pipeline_classes = (
        "Flux2Pipeline",
        "Flux2KleinPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("temb_mod_img")
    transformer_class = "Flux2Transformer2DModel"
    cfg_mode = "distilled"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 8, "single_transformer_blocks": 48}, num_heads=48, source="Flux2Transformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A photo of a red fox reading a newspaper in a cafe'], num_inference_steps=50, guidance_scale=4.0)
