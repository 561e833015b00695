"""HunyuanVideo adapter (diffusers ``HunyuanVideoPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanVideoAdapter(DiffusersAdapter):
    """HunyuanVideo: 20 dual-stream then 40 single-stream blocks, both called positionally as
    ``(hidden, encoder, temb, attention_mask, rotary)`` and returning ``(hidden, encoder)``.

    Guidance-distilled (``guidance_scale`` is an input of the transformer); a second, negative
    call per step only with ``true_cfg_scale > 1`` and a negative prompt.
    """

    name = "hunyuan_video"
    default_pretrained = "hunyuanvideo-community/HunyuanVideo"
    pipeline_classes = (
        "HunyuanVideoPipeline",
        "HunyuanVideoImageToVideoPipeline",
        "HunyuanSkyreelsImageToVideoPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "HunyuanVideoTransformer3DModel"
    cfg_mode = "true_cfg"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 20, "single_transformer_blocks": 40}, num_heads=24,
                             source="HunyuanVideo defaults (no config.json at hand)")
    # diffusers' HunyuanVideo example: 320x512, 61 frames, 30 steps, embedded guidance 6
    default_workload = WorkloadDefaults(prompts=["A cat walks on the grass, realistic"], num_inference_steps=30,
                                        guidance_scale=6.0, height=320, width=512, extra_call_kwargs={"num_frames": 61})

    def cfg_hint(self) -> str:
        return "add +workload.call_kwargs.true_cfg_scale=6 and +workload.call_kwargs.negative_prompt='...'"
