"""Wan 2.1 VACE adapter (diffusers ``WanVACEPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter
from dit_engine_adapters.wan import WAN_BLOCK


class WanVaceAdapter(DiffusersAdapter):
    """Wan 2.1 VACE: Wan blocks (positional, one tensor back) steered by ``vace_blocks`` that run before them on the control video; the VACE blocks are left alone; separate cond / uncond calls."""

    name = "wan_vace"
    pipeline_classes = (
        "WanVACEPipeline",
    )
    block_specs = (
        BlockSpec("blocks", WAN_BLOCK),
    )
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "WanVACETransformer3DModel"
    cfg_mode = "separate"
    block_count_keys = {"blocks": "num_layers"}
    default_info = ModelInfo(blocks={"blocks": 40}, num_heads=40, source="WanVACETransformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A cat walks on the grass, realistic'], num_inference_steps=50, guidance_scale=5.0, extra_call_kwargs={'num_frames': 81})
