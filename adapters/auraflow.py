"""AuraFlow adapter (diffusers ``AuraFlowPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class AuraFlowAdapter(DiffusersAdapter):
    """AuraFlow: MMDiT joint blocks (keywords) returning ``(encoder, hidden)``, then single-stream
    blocks over the joint [text, image] sequence (keywords ``hidden_states, temb``) returning one
    tensor. CFG is batched (cond and uncond in one transformer call)."""

    name = "auraflow"
    default_pretrained = "fal/AuraFlow-v0.3"
    pipeline_classes = ("AuraFlowPipeline",)
    block_specs = (
        BlockSpec("joint_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "AuraFlowTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"joint_transformer_blocks": "num_mmdit_layers", "single_transformer_blocks": "num_single_dit_layers"}
    default_info = ModelInfo(blocks={"joint_transformer_blocks": 4, "single_transformer_blocks": 32}, num_heads=12,
                             source="AuraFlow v0.3 defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A photo of a cozy cabin in a snowy forest at dusk"],
                                        num_inference_steps=50, guidance_scale=3.5)
