"""Allegro adapter (diffusers ``AllegroPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class AllegroAdapter(DiffusersAdapter):
    """Allegro: 32 cross-attention blocks called with keywords, returning the image stream alone;
    batched CFG."""

    name = "allegro"
    default_pretrained = "rhymes-ai/Allegro"
    pipeline_classes = (
        "AllegroPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", CROSS_ATTENTION),
    )
    teacache_probe = BlockInput("temb")
    transformer_class = "AllegroTransformer3DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 32}, num_heads=24,
                             source="Allegro defaults (no config.json at hand)")
    # the pipeline's defaults (100 steps, 88 frames at 720x1280) and the example's guidance and text length
    default_workload = WorkloadDefaults(prompts=["A seaside harbor with bright sunlight and sparkling seawater"],
                                        num_inference_steps=100, guidance_scale=7.5,
                                        extra_call_kwargs={"num_frames": 88, "max_sequence_length": 512})
