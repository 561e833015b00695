"""Z-Image adapter (diffusers ``ZImagePipeline`` and its img2img / inpaint / controlnet variants)."""

from __future__ import annotations

from dit_engine.adapter import BlockInput, BlockPattern, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter

#: Z-Image's main blocks: ``x`` (the padded [image, text] sequence) first positional, one tensor back.
Z_IMAGE_LAYER = BlockPattern(name="single(x)", hidden="x", encoder=None, returns=("hidden",))


class ZImageAdapter(DiffusersAdapter):
    """Z-Image / Z-Image-Turbo: a single-stream DiT. ``layers`` run over the unified [image, text]
    sequence (all arguments positional: ``x, attn_mask, freqs_cis, adaln_input, ...``; one tensor
    back). The ``noise_refiner`` / ``context_refiner`` lists run before them on one stream each and
    are left alone; the controlnet pipelines' ``controlnet`` (which shares those refiners) too.

    The transformer takes and returns LISTS of per-sample tensors; CFG is batched (cond and uncond
    samples in one call, ``guidance_scale > 0``). ``ZImageOmniPipeline`` is not served: its omni
    path calls the layers without ``adaln_input`` (``t_noisy`` / ``t_clean`` instead).
    """

    name = "z_image"
    default_pretrained = "Tongyi-MAI/Z-Image-Turbo"
    pipeline_classes = (
        "ZImagePipeline",
        "ZImageImg2ImgPipeline",
        "ZImageInpaintPipeline",
        "ZImageControlNetPipeline",
        "ZImageControlNetInpaintPipeline",
    )
    block_specs = (BlockSpec("layers", Z_IMAGE_LAYER),)
    teacache_probe = BlockInput("adaln_input", 3)
    transformer_class = "ZImageTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"layers": "n_layers"}
    heads_key = "n_heads"
    default_info = ModelInfo(blocks={"layers": 30}, num_heads=30, source="Z-Image-Turbo defaults (no config.json at hand)")
    #: Z-Image-Turbo: 9 steps (8 transformer calls' worth of denoising), no CFG
    default_workload = WorkloadDefaults(prompts=["A young woman in red hanfu under a lantern-lit night sky"],
                                        num_inference_steps=9, guidance_scale=0.0)
