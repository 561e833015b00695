"""FLUX.1 adapter (diffusers ``FluxPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockSpec, ModelInfo, WorkloadDefaults, flux_modulated_input
from dit_engine.diffusers_adapter import DiffusersAdapter


class FluxAdapter(DiffusersAdapter):
    """FLUX.1 dev/schnell/Krea/Kontext/Fill and VisualCloze: 19 dual-stream + 38 single-stream blocks.

    Both block lists take and return ``(encoder_hidden_states, hidden_states)`` in diffusers 0.42
    (the single blocks concatenate and split the streams inside), so caches treat them as one
    sequence. FLUX.1 is guidance-distilled (one call per step); ``FluxPipeline`` and
    ``FluxKontextPipeline`` add a negative call with ``true_cfg_scale > 1`` and a negative prompt.
    """

    name = "flux"
    default_pretrained = "black-forest-labs/FLUX.1-dev"
    pipeline_classes = (
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
        "FluxFillPipeline",
        "FluxKontextPipeline",
        "FluxKontextInpaintPipeline",
        "FluxControlPipeline",
        "FluxControlImg2ImgPipeline",
        "FluxControlInpaintPipeline",
        "FluxControlNetPipeline",
        "FluxControlNetImg2ImgPipeline",
        "FluxControlNetInpaintPipeline",
        "VisualClozePipeline",
        "VisualClozeGenerationPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
    )
    teacache_probe = staticmethod(flux_modulated_input)
    transformer_class = "FluxTransformer2DModel"
    #: FLUX.1 is guidance-distilled; a second (negative) call only with true CFG.
    cfg_mode = "true_cfg"
    block_count_keys = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
    default_info = ModelInfo(
        blocks={"transformer_blocks": 19, "single_transformer_blocks": 38},
        num_heads=24,
        source="FLUX.1 defaults (no config.json at hand)",
    )

    def communication_workload(self, model_info, height, width):
        """FLUX.1: 2x2 patches of the 8x latent (one token per 16x16 pixels), 512 text tokens,
        heads of 128 channels, bf16; dual-stream blocks all-reduce twice under TP, single once."""
        from dit_engine.parallel.volume import Workload

        image_tokens = ((height or 1024) // 16) * ((width or 1024) // 16)
        dual, single = model_info.blocks.get("transformer_blocks", 0), model_info.blocks.get("single_transformer_blocks", 0)
        return Workload(tokens=image_tokens + 512, hidden=model_info.num_heads * 128, attention_layers=dual + single,
                        output_tokens=image_tokens, output_channels=64, allreduces=2 * dual + single)

    def cfg_output_shape(self, transformer, hidden_states):
        # packed latents in, packed latents out (out_channels defaults to in_channels)
        out = getattr(transformer.config, "out_channels", None)
        return tuple(hidden_states.shape) if out in (None, transformer.config.in_channels) else None

    def cfg_hint(self) -> str:
        return "add +workload.call_kwargs.true_cfg_scale=4 and +workload.call_kwargs.negative_prompt='...'"

    default_workload = WorkloadDefaults(
        prompts=["A cat holding a sign that says hello world", "An astronaut riding a horse on the moon, photo"],
        num_inference_steps=28,
        guidance_scale=3.5,
    )
