"""HunyuanVideo-1.5 adapter (diffusers ``HunyuanVideo15Pipeline`` and its variants)."""

from __future__ import annotations

from typing import Any

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanVideo15Adapter(DiffusersAdapter):
    """HunyuanVideo-1.5: 54 dual-stream blocks called positionally as
    ``(hidden, encoder, temb, attention_mask, rotary)``, returning ``(hidden, encoder)``.

    CFG runs through the pipeline's ``guider`` component (``ClassifierFreeGuidance``): separate
    cond / uncond calls when its ``guidance_scale`` is above 1. The pipeline's ``__call__`` takes no
    ``guidance_scale``; the guider's own setting applies.
    """

    name = "hunyuan_video15"
    default_pretrained = "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v"
    pipeline_classes = (
        "HunyuanVideo15Pipeline",
        "HunyuanVideo15ImageToVideoPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),
    )
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "HunyuanVideo15Transformer3DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 54}, num_heads=16,
                             source="HunyuanVideo-1.5 defaults (no config.json at hand)")
    # guidance_scale documents the 480p checkpoint's guider setting; the pipeline does not take it
    default_workload = WorkloadDefaults(prompts=["A cat walks on the grass, realistic"], num_inference_steps=50,
                                        guidance_scale=6.0, extra_call_kwargs={"num_frames": 121})

    def cfg_calls(self, call_kwargs: dict[str, Any]) -> int | None:
        return None  # the pipeline's guider (a component, not a call argument) decides

    def cfg_hint(self) -> str:
        return "load a pipeline whose guider has guidance_scale > 1 (pipe.guider = pipe.guider.new(guidance_scale=6.0))"

    def call_kwargs(self, prompts, steps, guidance, height, width) -> dict[str, Any]:
        kwargs = super().call_kwargs(prompts, steps, guidance, height, width)
        del kwargs["guidance_scale"]  # not a pipeline argument: the guider holds it
        return kwargs
