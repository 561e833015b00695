"""Stable Diffusion 3 / 3.5 adapter (diffusers ``StableDiffusion3Pipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter


class SD3Adapter(DiffusersAdapter):
    """SD3 / SD3.5: one list of MMDiT ``JointTransformerBlock``s returning ``(encoder, hidden)``.

    The last block is ``context_pre_only`` and returns ``(None, hidden)``; the pattern reads that
    as "no text stream". CFG is batched (cond and uncond in one transformer call).
    """

    name = "sd3"
    default_pretrained = "stabilityai/stable-diffusion-3-medium-diffusers"
    pipeline_classes = (
        "StableDiffusion3Pipeline",
        "StableDiffusion3Img2ImgPipeline",
        "StableDiffusion3InpaintPipeline",
        "StableDiffusion3ControlNetPipeline",
        "StableDiffusion3ControlNetInpaintingPipeline",
        "StableDiffusion3PAGPipeline",
        "StableDiffusion3PAGImg2ImgPipeline",
    )
    block_specs = (BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),)
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "SD3Transformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 24}, num_heads=24,
                             source="SD3 medium defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A capybara holding a sign that reads Hello World"],
                                        num_inference_steps=28, guidance_scale=7.0)
