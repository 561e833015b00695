"""OmniGen adapter (diffusers ``OmniGenPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class OmniGenAdapter(DiffusersAdapter):
    """OmniGen: A decoder-only DiT: ``layers`` over the [condition, time, image] sequence (hidden positional, one tensor back); batched CFG."""

    name = "omnigen"
    pipeline_classes = (
        "OmniGenPipeline",
    )
    block_specs = (
        BlockSpec("layers", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("hidden_states", 0)
    transformer_class = "OmniGenTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"layers": "num_layers"}
    default_info = ModelInfo(blocks={"layers": 32}, num_heads=32, source="OmniGenTransformer2DModel defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=['A curly-haired man in a red shirt is drinking tea'], num_inference_steps=50, guidance_scale=2.5)
