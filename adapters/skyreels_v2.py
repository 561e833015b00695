"""SkyReels-V2 adapter (diffusers ``SkyReelsV2Pipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter
from dit_engine_adapters.wan import WAN_BLOCK


class SkyReelsV2Adapter(DiffusersAdapter):
    """SkyReels-V2: Wan-style cross-attention blocks (positional, with an attention mask), one tensor back; separate cond / uncond calls."""

    name = "skyreels_v2"
    pipeline_classes = (
        "SkyReelsV2Pipeline",
        "SkyReelsV2ImageToVideoPipeline",
        "SkyReelsV2DiffusionForcingPipeline",
        "SkyReelsV2DiffusionForcingImageToVideoPipeline",
        "SkyReelsV2DiffusionForcingVideoToVideoPipeline",
    )
    block_specs = (
        BlockSpec("blocks", WAN_BLOCK),
    )
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "SkyReelsV2Transformer3DModel"
    cfg_mode = "separate"
    block_count_keys = {"blocks": "num_layers"}
    default_info = ModelInfo(blocks={"blocks": 32}, num_heads=16, source="SkyReelsV2Transformer3DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A cat walks on the grass, realistic'], num_inference_steps=50, guidance_scale=6.0, extra_call_kwargs={'num_frames': 97})
