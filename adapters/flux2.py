"""FLUX.2 (dev, klein) adapter (diffusers ``Flux2Pipeline`` and its variants)."""

from __future__ import annotations

from typing import Any

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class Flux2Adapter(DiffusersAdapter):
    """FLUX.2 (dev, klein): 8 dual-stream blocks returning ``(encoder, hidden)`` (modulated by
    ``temb_mod_img`` / ``temb_mod_txt``), then 48 single-stream blocks over the joint [text, image]
    sequence the parent concatenated (``hidden_states`` in, one tensor out; ``encoder_hidden_states``
    is passed as None).

    CFG differs by pipeline: FLUX.2-dev (``Flux2Pipeline``) is guidance-distilled, guidance is a
    transformer input (one call per step); the base klein models (``Flux2KleinPipeline`` with
    ``is_distilled=False``) run separate cond / uncond calls when ``guidance_scale > 1``, the
    step-distilled klein ones ignore guidance. ``Flux2KleinKVPipeline`` is left out: its first step
    returns a KV cache next to the prediction, which the block caches do not model.
    """

    name = "flux2"
    default_pretrained = "black-forest-labs/FLUX.2-dev"
    pipeline_classes = (
        "Flux2Pipeline",
        "Flux2KleinPipeline",
        "Flux2KleinInpaintPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("temb_mod_img")
    transformer_class = "Flux2Transformer2DModel"
    #: the flagship FLUX.2-dev; klein base differs (see :meth:`cfg_calls`)
    cfg_mode = "distilled"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 8, "single_transformer_blocks": 48}, num_heads=48,
                             source="FLUX.2-dev defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A photo of a red fox reading a newspaper in a cafe"],
                                        num_inference_steps=50, guidance_scale=4.0)

    def cfg_calls(self, call_kwargs: dict[str, Any]) -> int | None:
        """One call per step at ``guidance_scale <= 1`` on every FLUX.2 pipeline; above that it
        depends on the checkpoint, which the call arguments do not name (FLUX.2-dev and the
        step-distilled klein: 1, klein base: 2), so None."""
        guidance = call_kwargs.get("guidance_scale", self.workload_defaults().guidance_scale)
        return 1 if guidance <= 1 else None

    def cfg_hint(self) -> str:
        return "use a FLUX.2-klein base checkpoint (Flux2KleinPipeline, is_distilled=false) with workload.guidance_scale above 1"
