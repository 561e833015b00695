"""PRX adapter (diffusers ``PRXPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class PRXAdapter(DiffusersAdapter):
    """PRX (Photoroom): cross-attention DiT blocks (keywords ``hidden_states, encoder_hidden_states,
    temb, ...``) returning the image stream alone. CFG is batched (cond and uncond in one
    transformer call, with a batched ``attention_mask`` over the text)."""

    name = "prx"
    default_pretrained = "Photoroom/prx-1024-t2i-beta"
    pipeline_classes = ("PRXPipeline", "PRXPixelPipeline")
    block_specs = (BlockSpec("blocks", CROSS_ATTENTION),)
    teacache_probe = BlockInput("temb")
    transformer_class = "PRXTransformer2DModel"
    cfg_mode = "batched"
    batch_inputs = (*DiffusersAdapter.batch_inputs, "attention_mask")
    block_count_keys = {"blocks": "depth"}
    heads_key = "num_heads"
    size_multiple = 32
    default_info = ModelInfo(blocks={"blocks": 16}, num_heads=28, source="PRX defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A front-facing portrait of a lion in the golden savanna at sunset"],
                                        num_inference_steps=28, guidance_scale=5.0)
