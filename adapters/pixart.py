"""PixArt-α / Σ adapter (diffusers ``PixArtAlphaPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class PixArtAdapter(DiffusersAdapter):
    """PixArt-α / Σ: ``BasicTransformerBlock``s with cross-attention: hidden positional, text as the ``encoder_hidden_states`` keyword, one tensor back; batched CFG."""

    name = "pixart"
    pipeline_classes = (
        "PixArtAlphaPipeline",
        "PixArtSigmaPipeline",
        "PixArtSigmaPAGPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", CROSS_ATTENTION),
    )
    teacache_probe = BlockInput("timestep")
    transformer_class = "PixArtTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=16, source="PixArtTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A small cactus with a happy face in the Sahara desert'], num_inference_steps=20, guidance_scale=4.5)
