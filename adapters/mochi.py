"""Mochi 1 adapter (diffusers ``MochiPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class MochiAdapter(DiffusersAdapter):
    """Mochi 1: Asymmetric dual-stream blocks (keywords) returning ``(hidden, encoder)``; batched CFG."""

    name = "mochi"
    pipeline_classes = (
        "MochiPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb")
    transformer_class = "MochiTransformer3DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 48}, num_heads=24, source="MochiTransformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["Close-up of a chameleon's eye, with its scaly skin changing color"], num_inference_steps=64, guidance_scale=4.5, extra_call_kwargs={'num_frames': 85})
