"""FLUX.1 adapter (diffusers ``FluxPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine_adapters._diffusers import DiffusersAdapter


class FluxAdapter(DiffusersAdapter):
    """FLUX.1 dev/schnell/Krea/Kontext/Fill: 19 dual-stream + 38 single-stream blocks.

    Both block lists take and return ``(encoder_hidden_states, hidden_states)`` in diffusers 0.42,
    so caches treat them as one sequence.
    """

    name = "flux"
    pipeline_classes = (
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
        "FluxFillPipeline",
        "FluxKontextPipeline",
        "FluxKontextInpaintPipeline",
        "FluxControlPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
    )
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(
        blocks={"transformer_blocks": 19, "single_transformer_blocks": 38},
        num_heads=24,
        source="FLUX.1 defaults (no config.json at hand)",
    )

    def workload_defaults(self) -> WorkloadDefaults:
        return WorkloadDefaults(
            prompts=["A cat holding a sign that says hello world", "An astronaut riding a horse on the moon, photo"],
            num_inference_steps=28,
            guidance_scale=3.5,
        )
