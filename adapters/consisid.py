"""ConsisID adapter (diffusers ``ConsisIDPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class ConsisIDAdapter(DiffusersAdapter):
    """ConsisID: CogVideoX-style blocks returning ``(hidden, encoder)``; the face ``perceiver_cross_attention`` layers interleaved with them are left alone; batched CFG."""

    name = "consisid"
    pipeline_classes = (
        "ConsisIDPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "ConsisIDTransformer3DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 30}, num_heads=30, source="ConsisIDTransformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A woman smiling in a garden, cinematic'], num_inference_steps=50, guidance_scale=6.0, extra_call_kwargs={'num_frames': 49})
