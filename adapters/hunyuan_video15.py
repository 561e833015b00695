"""HunyuanVideo-1.5 adapter (diffusers ``HunyuanVideo15Pipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanVideo15Adapter(DiffusersAdapter):
    """HunyuanVideo-1.5: Dual-stream blocks, positional, returning ``(hidden, encoder)``; batched CFG."""

    name = "hunyuan_video15"
    pipeline_classes = (
        "HunyuanVideo15Pipeline",
        "HunyuanVideo15ImageToVideoPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "HunyuanVideo15Transformer3DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 54}, num_heads=16, source="HunyuanVideo15Transformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A cat walks on the grass, realistic'], num_inference_steps=50, guidance_scale=6.0, extra_call_kwargs={'num_frames': 121})
