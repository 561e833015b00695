"""Lumina-Image 2.0 adapter (diffusers ``Lumina2Pipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class Lumina2Adapter(DiffusersAdapter):
    """Lumina-Image 2.0: A single-stream DiT: ``layers`` over the joint [caption, image] sequence (positional, one tensor back). ``noise_refiner`` / ``context_refiner`` run before it on one stream each and are left alone; separate cond / uncond calls."""

    name = "lumina2"
    pipeline_classes = (
        "Lumina2Pipeline",
    )
    block_specs = (
        BlockSpec("layers", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("temb", 3)
    transformer_class = "Lumina2Transformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"layers": "num_layers"}
    default_info = ModelInfo(blocks={"layers": 26}, num_heads=24, source="Lumina2Transformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A serene photograph of a mountain lake at dawn'], num_inference_steps=50, guidance_scale=4.0)
