"""HiDream-I1 adapter (diffusers ``HiDreamImagePipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HiDreamAdapter(DiffusersAdapter):
    """HiDream-I1: Dual-stream blocks returning ``(hidden, encoder)``, then single-stream blocks over the joint [image, text] sequence returning one tensor; batched CFG."""

    name = "hidream"
    pipeline_classes = (
        "HiDreamImagePipeline",
    )
    block_specs = (
        BlockSpec("double_stream_blocks", DUAL_STREAM_HIDDEN_FIRST),
        BlockSpec("single_stream_blocks", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("temb")
    transformer_class = "HiDreamImageTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"double_stream_blocks": "num_layers", "single_stream_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"double_stream_blocks": 16, "single_stream_blocks": 32}, num_heads=20, source="HiDreamImageTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A cat holding a sign that says 'HiDream.ai'"], num_inference_steps=50, guidance_scale=5.0)
