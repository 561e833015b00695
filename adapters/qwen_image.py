"""Qwen-Image adapter (diffusers ``QwenImagePipeline`` and its edit, controlnet and layered variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter


class QwenImageAdapter(DiffusersAdapter):
    """Qwen-Image: 60 dual-stream MMDiT blocks (keywords in) returning ``(encoder, hidden)``.

    The edit, edit-plus and layered pipelines append the reference image's latents to the image
    stream; the controlnet pipelines add a ``controlnet`` whose residuals the transformer adds after
    each block (the controlnet itself is not cached). With ``true_cfg_scale > 1`` and a negative
    prompt every pipeline makes separate cond and uncond calls (two CFG branches per step).
    """

    name = "qwen_image"
    default_pretrained = "Qwen/Qwen-Image"
    pipeline_classes = (
        "QwenImagePipeline",
        "QwenImageImg2ImgPipeline",
        "QwenImageInpaintPipeline",
        "QwenImageEditPipeline",
        "QwenImageEditInpaintPipeline",
        "QwenImageEditPlusPipeline",
        "QwenImageControlNetPipeline",
        "QwenImageControlNetInpaintPipeline",
        "QwenImageLayeredPipeline",
    )
    block_specs = (BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),)
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "QwenImageTransformer2DModel"
    cfg_mode = "true_cfg"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 60}, num_heads=24, source="Qwen-Image defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(
        prompts=["A coffee shop entrance with a chalkboard sign reading 'Qwen Coffee 2 dollars'"],
        num_inference_steps=50,
        guidance_scale=4.0,  # passed as true_cfg_scale (see call_kwargs)
    )

    def cfg_calls(self, call_kwargs) -> int:
        # the pipelines' true_cfg_scale defaults to 4.0 (the base class assumes 1.0)
        negative = call_kwargs.get("negative_prompt") is not None or call_kwargs.get("negative_prompt_embeds") is not None
        return 2 if call_kwargs.get("true_cfg_scale", 4.0) > 1 and negative else 1

    def cfg_output_shape(self, transformer, hidden_states):
        # packed 2x2 patches in and out: patch_size**2 * out_channels == in_channels (the edit
        # pipelines' image latents ride along in the sequence and come back out, then are cut off)
        config = transformer.config
        same = config.patch_size**2 * config.out_channels == config.in_channels
        return tuple(hidden_states.shape) if same else None

    def cfg_hint(self) -> str:
        return "set workload.guidance_scale (Qwen-Image's true_cfg_scale) above 1"

    def call_kwargs(self, prompts, steps, guidance, height, width):
        # Qwen-Image's CFG scale is `true_cfg_scale` (it needs a negative prompt to take effect).
        kwargs = super().call_kwargs(prompts, steps, guidance, height, width)
        kwargs["true_cfg_scale"] = kwargs.pop("guidance_scale")
        kwargs.setdefault("negative_prompt", [" "] * len(prompts))
        return kwargs
