"""HunyuanImage-2.1 adapter (diffusers ``HunyuanImagePipeline`` and ``HunyuanImageRefinerPipeline``)."""

from __future__ import annotations

from typing import Any

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanImageAdapter(DiffusersAdapter):
    """HunyuanImage-2.1: dual-stream ``transformer_blocks`` then ``single_transformer_blocks``,
    both called with three positional arguments (hidden, encoder, temb) plus ``attention_mask`` /
    ``image_rotary_emb`` keywords, both returning ``(hidden, encoder)`` (pattern D).

    CFG runs through the pipeline's guider (``AdaptiveProjectedMixGuidance``): separate cond and
    uncond calls, at the guider's own ``guidance_scale``. The pipeline takes no ``guidance_scale``
    argument, so the workload's is not passed on; the distilled checkpoint's embedded guidance is
    ``distilled_guidance_scale`` (``workload.call_kwargs``).
    """

    name = "hunyuan_image"
    default_pretrained = "hunyuanvideo-community/HunyuanImage-2.1-Diffusers"
    pipeline_classes = (
        "HunyuanImagePipeline",
        "HunyuanImageRefinerPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "HunyuanImageTransformer2DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    #: VAE 32x spatial x patch 1; the pipeline asks for multiples of twice the VAE factor
    size_multiple = 64
    default_info = ModelInfo(blocks={"transformer_blocks": 20, "single_transformer_blocks": 40}, num_heads=28,
                             source="HunyuanImage-2.1 defaults (no config.json at hand)")
    #: guidance_scale: the 2.1 guider's (3.5); informational, see the class docstring
    default_workload = WorkloadDefaults(prompts=["A cute penguin wearing a knitted scarf"], num_inference_steps=50,
                                        guidance_scale=3.5)

    def cfg_hint(self) -> str:
        return "use a checkpoint whose guider is enabled (HunyuanImage's CFG scale is its guider's guidance_scale)"

    def call_kwargs(self, prompts, steps, guidance, height, width) -> dict[str, Any]:
        kwargs = super().call_kwargs(prompts, steps, guidance, height, width)
        del kwargs["guidance_scale"]  # set on the pipeline's guider, not per call
        return kwargs
