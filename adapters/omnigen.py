"""OmniGen adapter (diffusers ``OmniGenPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class OmniGenAdapter(DiffusersAdapter):
    """OmniGen v1: a decoder-only (Phi-3) DiT. ``layers`` run over the [condition, time, image]
    sequence (hidden positional, mask and rotary embedding keywords; one tensor back). The blocks
    are not timestep-modulated (the timestep is a token), so TeaCache watches the first block's
    input. CFG is batched: cond, uncond (and image-cond with input images) in one call.

    The pipeline tokenizes inside (no embeddings input); the transformer gets ``input_ids``,
    ``attention_mask`` and ``position_ids`` per sample.
    """

    name = "omnigen"
    default_pretrained = "Shitao/OmniGen-v1-diffusers"
    pipeline_classes = ("OmniGenPipeline",)
    block_specs = (BlockSpec("layers", SINGLE_STREAM),)
    teacache_probe = BlockInput("hidden_states", 0)
    transformer_class = "OmniGenTransformer2DModel"
    cfg_mode = "batched"
    batch_inputs = (*DiffusersAdapter.batch_inputs, "input_ids", "attention_mask", "position_ids")
    block_count_keys = {"layers": "num_layers"}
    default_info = ModelInfo(blocks={"layers": 32}, num_heads=32, source="OmniGen v1 defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A curly-haired man in a red shirt is drinking tea"],
                                        num_inference_steps=50, guidance_scale=2.5)
