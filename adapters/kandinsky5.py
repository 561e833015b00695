"""Kandinsky 5.0 adapter (diffusers ``Kandinsky5T2VPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import BlockInput, BlockPattern, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class Kandinsky5Adapter(DiffusersAdapter):
    """Kandinsky 5.0: Visual decoder blocks called positionally as ``(visual_embed, text_embed, time_embed, rope, sparse_params)``, one tensor back; the text encoder blocks before them are left alone; separate cond / uncond calls."""

    name = "kandinsky5"
    pipeline_classes = (
        "Kandinsky5T2VPipeline",
        "Kandinsky5I2VPipeline",
        "Kandinsky5T2IPipeline",
        "Kandinsky5I2IPipeline",
    )
    block_specs = (
        BlockSpec("visual_transformer_blocks", BlockPattern(name="cross-attn(visual_embed)", hidden="visual_embed", encoder="text_embed", returns=("hidden",))),
    )
    teacache_probe = BlockInput("time_embed", 2)
    transformer_class = "Kandinsky5Transformer3DModel"
    cfg_mode = "separate"
    block_count_keys = {"visual_transformer_blocks": "num_visual_blocks"}
    default_info = ModelInfo(blocks={"visual_transformer_blocks": 32}, num_heads=0, source="Kandinsky5Transformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A cat and a dog baking a cake together in a kitchen'], num_inference_steps=50, guidance_scale=5.0, extra_call_kwargs={'num_frames': 121})
