"""Lumina-Image 2.0 adapter (diffusers ``Lumina2Pipeline``)."""

from __future__ import annotations

from dit_engine.adapter import SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class Lumina2Adapter(DiffusersAdapter):
    """Lumina-Image 2.0: a single-stream DiT. ``layers`` run over the joint [caption, image]
    sequence (positional: hidden, mask, rotary, temb; one tensor back). ``context_refiner`` and
    ``noise_refiner`` run before them on one stream each and are left alone.

    The pipeline makes separate cond and uncond calls while ``guidance_scale > 1`` (and the step is
    before ``cfg_trunc_ratio``).
    """

    name = "lumina2"
    default_pretrained = "Alpha-VLLM/Lumina-Image-2.0"
    pipeline_classes = ("Lumina2Pipeline",)
    block_specs = (BlockSpec("layers", SINGLE_STREAM),)
    teacache_probe = BlockInput("temb", 3)
    transformer_class = "Lumina2Transformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"layers": "num_layers"}
    #: VAE 8x spatial x patch 2
    size_multiple = 16
    default_info = ModelInfo(blocks={"layers": 26}, num_heads=24,
                             source="Lumina-Image 2.0 defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A serene photograph of a mountain lake at dawn"],
                                        num_inference_steps=50, guidance_scale=4.0)
