"""Bria 3.2 adapter (diffusers ``BriaPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockSpec, ModelInfo, WorkloadDefaults, flux_modulated_input
from dit_engine.diffusers_adapter import DiffusersAdapter


class BriaAdapter(DiffusersAdapter):
    """Bria 3.2: FLUX-style dual-stream and single-stream blocks, both taking and returning
    ``(encoder, hidden)``; no pooled text, no guidance embedding; CFG is batched (cond and uncond
    in one transformer call)."""

    name = "bria"
    default_pretrained = "briaai/BRIA-3.2"
    # the diffusers weights are on this branch (the default branch holds the custom-code version)
    default_revision = "bria_3_2_diffusers"
    pipeline_classes = (
        "BriaPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
    )
    teacache_probe = staticmethod(flux_modulated_input)
    transformer_class = "BriaTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 19, "single_transformer_blocks": 38}, num_heads=24, source="BriaTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A portrait of a Beagle dog sitting on a green lawn'], num_inference_steps=30, guidance_scale=5.0)
