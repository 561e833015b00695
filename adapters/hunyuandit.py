"""HunyuanDiT adapter (diffusers ``HunyuanDiTPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanDiTAdapter(DiffusersAdapter):
    """HunyuanDiT: U-ViT style blocks with long skips (the second half takes ``skip=``): hidden positional, text as a keyword, one tensor back; batched CFG."""

    name = "hunyuandit"
    pipeline_classes = (
        "HunyuanDiTPipeline",
        "HunyuanDiTPAGPipeline",
        "HunyuanDiTControlNetPipeline",
    )
    block_specs = (
        BlockSpec("blocks", CROSS_ATTENTION),
    )
    teacache_probe = BlockInput("temb")
    transformer_class = "HunyuanDiT2DModel"
    cfg_mode = "batched"
    block_count_keys = {"blocks": "num_layers"}
    default_info = ModelInfo(blocks={"blocks": 28}, num_heads=16, source="HunyuanDiT2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['An astronaut riding a horse'], num_inference_steps=50, guidance_scale=5.0)
