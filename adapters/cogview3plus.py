"""CogView3-Plus adapter (diffusers ``CogView3PlusPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class CogView3PlusAdapter(DiffusersAdapter):
    """CogView3-Plus: Dual-stream blocks (keywords, timestep embedding as ``emb``) returning ``(hidden, encoder)``; batched CFG."""

    name = "cogview3plus"
    pipeline_classes = (
        "CogView3PlusPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("emb")
    transformer_class = "CogView3PlusTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 30}, num_heads=64, source="CogView3PlusTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A vibrant cherry red sports car on a winding mountain road'], num_inference_steps=50, guidance_scale=7.0)
