"""LTX-Video adapter (diffusers ``LTXPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class LTXVideoAdapter(DiffusersAdapter):
    """LTX-Video: 28 cross-attention blocks called with keywords, returning the image stream alone;
    batched CFG. The VAE compresses 32x in space (patch size 1), hence sizes in multiples of 32."""

    name = "ltx_video"
    default_pretrained = "Lightricks/LTX-Video"
    pipeline_classes = (
        "LTXPipeline",
        "LTXImageToVideoPipeline",
        "LTXConditionPipeline",
        "LTXI2VLongMultiPromptPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", CROSS_ATTENTION),
    )
    teacache_probe = BlockInput("temb")
    transformer_class = "LTXVideoTransformer3DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    size_multiple = 32
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=32,
                             source="LTX-Video 2B defaults (no config.json at hand)")
    # diffusers' LTX-Video example: 480x704, 161 frames, 50 steps, guidance 3
    default_workload = WorkloadDefaults(prompts=["A woman with long brown hair walks along a beach at sunset"],
                                        num_inference_steps=50, guidance_scale=3.0, height=480, width=704,
                                        extra_call_kwargs={"num_frames": 161})
    #: attn2 attends the text, which every rank keeps whole (see context_parallel_plan)
    cross_attention_modules = ("transformer_blocks.*.attn2",)

    def context_parallel_plan(self):
        """diffusers' plan without splitting the text: the prompt is short, so every rank keeps it
        whole and cross-attention runs on local queries (Ulysses needs as many keys as queries
        per rank in the attention it splits, which a split prompt would not give)."""
        plan = super().context_parallel_plan()
        if plan is None:
            return None
        entry = {k: v for k, v in plan[""].items() if k not in ("encoder_hidden_states", "encoder_attention_mask")}
        return {**plan, "": entry}
