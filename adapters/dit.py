"""DiT (class-conditional) adapter (diffusers ``DiTPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class DiTAdapter(DiffusersAdapter):
    """DiT (class-conditional): The original class-conditional DiT: ``BasicTransformerBlock``s with adaLN-Zero over the image tokens, one tensor back; prompts are ImageNet class names."""

    name = "dit"
    pipeline_classes = (
        "DiTPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("timestep")
    transformer_class = "DiTTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=16, source="DiTTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['golden retriever'], num_inference_steps=25, guidance_scale=4.0)
