"""ChronoEdit adapter (diffusers ``ChronoEditPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter
from dit_engine_adapters.wan import WAN_BLOCK


class ChronoEditAdapter(DiffusersAdapter):
    """ChronoEdit: Wan 2.1 I2V blocks (positional, one tensor back) editing an image as a short video
    (5 frames, more with temporal reasoning); separate cond / uncond calls when ``guidance_scale > 1``."""

    name = "chronoedit"
    default_pretrained = "nvidia/ChronoEdit-14B-Diffusers"
    pipeline_classes = ("ChronoEditPipeline",)
    block_specs = (BlockSpec("blocks", WAN_BLOCK),)
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "ChronoEditTransformer3DModel"
    cfg_mode = "separate"
    cross_attention_modules = ("blocks.*.attn2",)
    block_count_keys = {"blocks": "num_layers"}
    default_info = ModelInfo(blocks={"blocks": 40}, num_heads=40, source="ChronoEdit 14B defaults (no config.json at hand)")
    size_multiple = 16
    default_workload = WorkloadDefaults(prompts=["Add a red scarf to the person"], num_inference_steps=50, guidance_scale=5.0)
