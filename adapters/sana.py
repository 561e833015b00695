"""Sana adapter (diffusers ``SanaPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import BlockInput, BlockPattern, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class SanaAdapter(DiffusersAdapter):
    """Sana: Linear-attention DiT blocks called with seven positional arguments (hidden, mask, text, text mask, timestep, height, width), one tensor back; batched CFG."""

    name = "sana"
    pipeline_classes = (
        "SanaPipeline",
        "SanaSprintPipeline",
        "SanaPAGPipeline",
        "SanaControlNetPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", BlockPattern(name="cross-attn(hidden)", encoder_position=2, returns=("hidden",))),
    )
    teacache_probe = BlockInput("timestep", 4)
    transformer_class = "SanaTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    size_multiple = 32
    default_info = ModelInfo(blocks={"transformer_blocks": 20}, num_heads=70, source="SanaTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A cyberpunk cat with a neon sign that says 'Sana'"], num_inference_steps=20, guidance_scale=4.5)
