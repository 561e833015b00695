"""Chroma adapter (diffusers ``ChromaPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class ChromaAdapter(DiffusersAdapter):
    """Chroma: 19 dual-stream blocks returning ``(encoder, hidden)``, then 38 single-stream blocks
    over the joint [text, image] sequence the parent concatenated (``hidden_states`` in, one tensor
    out); separate cond / uncond calls when ``guidance_scale > 1``. Each block gets its own slice of
    the approximator's modulation as ``temb``; TeaCache probes the first block's."""

    name = "chroma"
    default_pretrained = "lodestones/Chroma1-HD"
    pipeline_classes = (
        "ChromaPipeline",
        "ChromaImg2ImgPipeline",
        "ChromaInpaintPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "ChromaTransformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 19, "single_transformer_blocks": 38}, num_heads=24, source="Chroma1-HD defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A high-fashion close-up portrait of a blonde woman in clear sunglasses'], num_inference_steps=40, guidance_scale=3.0)
