"""Z-Image adapter (diffusers ``ZImagePipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import BlockInput, BlockPattern, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class ZImageAdapter(DiffusersAdapter):
    """Z-Image: A single-stream DiT: ``layers`` over the unified [image, text] sequence (``x`` positional, one tensor back). The ``noise_refiner`` / ``context_refiner`` lists run before it on one stream each and are left alone."""

    name = "z_image"
    pipeline_classes = (
        "ZImagePipeline",
        "ZImageImg2ImgPipeline",
        "ZImageInpaintPipeline",
        "ZImageControlNetPipeline",
        "ZImageControlNetInpaintPipeline",
    )
    block_specs = (
        BlockSpec("layers", BlockPattern(name="single(x)", hidden="x", encoder=None, returns=("hidden",))),
    )
    teacache_probe = BlockInput("adaln_input", 3)
    transformer_class = "ZImageTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"layers": "n_layers"}
    heads_key = "n_heads"
    default_info = ModelInfo(blocks={"layers": 30}, num_heads=30, source="ZImageTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A young woman in red hanfu under a lantern-lit night sky'], num_inference_steps=9, guidance_scale=0.0)
