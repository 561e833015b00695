"""Cosmos (Predict 1 / 2) adapter (diffusers ``Cosmos2TextToImagePipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class CosmosAdapter(DiffusersAdapter):
    """Cosmos (Predict 1 / 2): Cross-attention blocks called with eight positional arguments, one tensor back; separate cond / uncond calls."""

    name = "cosmos"
    pipeline_classes = (
        "Cosmos2TextToImagePipeline",
        "Cosmos2VideoToWorldPipeline",
        "CosmosTextToWorldPipeline",
        "CosmosVideoToWorldPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", CROSS_ATTENTION),
    )
    teacache_probe = BlockInput("temb", 3)
    transformer_class = "CosmosTransformer3DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=32, source="CosmosTransformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A close-up shot of a ceramic vase with flowers on a wooden table'], num_inference_steps=35, guidance_scale=7.0)
