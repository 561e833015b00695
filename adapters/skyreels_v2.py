"""SkyReels-V2 adapter (diffusers ``SkyReelsV2Pipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter
from dit_engine_adapters.wan import WAN_BLOCK


class SkyReelsV2Adapter(DiffusersAdapter):
    """SkyReels-V2: Wan-style cross-attention blocks (positional hidden, encoder, temb, rotary and an
    attention mask), one tensor back; separate cond / uncond calls when ``guidance_scale > 1``."""

    name = "skyreels_v2"
    default_pretrained = "Skywork/SkyReels-V2-T2V-14B-540P-Diffusers"
    pipeline_classes = (
        "SkyReelsV2Pipeline",
        "SkyReelsV2ImageToVideoPipeline",
        "SkyReelsV2DiffusionForcingPipeline",
        "SkyReelsV2DiffusionForcingImageToVideoPipeline",
        "SkyReelsV2DiffusionForcingVideoToVideoPipeline",
    )
    block_specs = (BlockSpec("blocks", WAN_BLOCK),)
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "SkyReelsV2Transformer3DModel"
    cfg_mode = "separate"
    cross_attention_modules = ("blocks.*.attn2",)
    block_count_keys = {"blocks": "num_layers"}
    default_info = ModelInfo(blocks={"blocks": 40}, num_heads=40, source="SkyReels-V2 14B defaults (no config.json at hand)")
    size_multiple = 16
    default_workload = WorkloadDefaults(prompts=["A cat walks on the grass, realistic"], num_inference_steps=50,
                                        guidance_scale=6.0, height=544, width=960, extra_call_kwargs={"num_frames": 97})
