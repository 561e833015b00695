"""Wan 2.1 VACE adapter (diffusers ``WanVACEPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter
from dit_engine_adapters.wan import WAN_BLOCK


class WanVaceAdapter(DiffusersAdapter):
    """Wan 2.1 VACE: Wan blocks (positional, one tensor back) steered by ``vace_blocks``.

    The VACE blocks run first, on the control video, and their hints are added after the main
    blocks listed in ``vace_layers``; they are left alone (computed every call). Separate cond /
    uncond calls; a Wan 2.2 VACE pipeline's second expert ``transformer_2`` keeps its own state.
    """

    name = "wan_vace"
    default_pretrained = "Wan-AI/Wan2.1-VACE-14B-diffusers"
    pipeline_classes = ("WanVACEPipeline",)
    transformer_attrs = ("transformer", "transformer_2")
    block_specs = (BlockSpec("blocks", WAN_BLOCK),)
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "WanVACETransformer3DModel"
    cfg_mode = "separate"
    cross_attention_modules = ("blocks.*.attn2", "vace_blocks.*.attn2")
    block_count_keys = {"blocks": "num_layers"}
    default_info = ModelInfo(blocks={"blocks": 40}, num_heads=40, source="Wan 2.1 VACE 14B defaults (no config.json at hand)")
    size_multiple = 16
    default_workload = WorkloadDefaults(prompts=["A cat walks on the grass, realistic"], num_inference_steps=50,
                                        guidance_scale=5.0, extra_call_kwargs={"num_frames": 81})
