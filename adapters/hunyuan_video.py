"""HunyuanVideo adapter (diffusers ``HunyuanVideoPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanVideoAdapter(DiffusersAdapter):
    """HunyuanVideo: Dual-stream then single-stream blocks, both positional and returning ``(hidden, encoder)``; guidance-distilled (true CFG with ``true_cfg_scale`` and a negative prompt)."""

    name = "hunyuan_video"
    pipeline_classes = (
        "HunyuanVideoPipeline",
        "HunyuanVideoImageToVideoPipeline",
        "HunyuanSkyreelsImageToVideoPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "HunyuanVideoTransformer3DModel"
    cfg_mode = "true_cfg"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 20, "single_transformer_blocks": 40}, num_heads=24, source="HunyuanVideoTransformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A cat walks on the grass, realistic'], num_inference_steps=50, guidance_scale=6.0, extra_call_kwargs={'num_frames': 61})
