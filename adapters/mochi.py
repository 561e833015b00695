"""Mochi 1 adapter (diffusers ``MochiPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class MochiAdapter(DiffusersAdapter):
    """Mochi 1: 48 asymmetric dual-stream blocks called with keywords, returning ``(hidden, encoder)``
    (the last block is ``context_pre_only``: its text stream comes back unchanged). Batched CFG."""

    name = "mochi"
    default_pretrained = "genmo/mochi-1-preview"
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
    default_info = ModelInfo(blocks={"transformer_blocks": 48}, num_heads=24,
                             source="Mochi 1 defaults (no config.json at hand)")
    # the pipeline's defaults (64 steps, guidance 4.5) and the model card's 84-frame clip (6k + 1 frames)
    default_workload = WorkloadDefaults(
        prompts=["Close-up of a chameleon's eye, with its scaly skin changing color. Ultra high resolution 4k."],
        num_inference_steps=64, guidance_scale=4.5, extra_call_kwargs={"num_frames": 85})
