"""Cosmos (Predict 1 / 2 / 2.5) adapter (diffusers ``Cosmos2TextToImagePipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class CosmosAdapter(DiffusersAdapter):
    """Cosmos (Predict 1 / 2 / 2.5): cross-attention blocks called with eight positional arguments
    ``(hidden, encoder, embedded_timestep, temb, rotary, extra_pos_emb, attention_mask,
    controlnet_residual)``, returning the image stream alone; separate cond / uncond calls.

    The pipelines refuse to run without ``cosmos_guardrail``'s safety checker, and the transformer
    needs torchvision for its padding mask (``concat_padding_mask``, on in the released models).
    """

    name = "cosmos"
    default_pretrained = "nvidia/Cosmos-Predict2-2B-Text2Image"
    pipeline_classes = (
        "Cosmos2TextToImagePipeline",
        "Cosmos2VideoToWorldPipeline",
        "CosmosTextToWorldPipeline",
        "CosmosVideoToWorldPipeline",
        "Cosmos2_5_PredictBasePipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", CROSS_ATTENTION),
    )
    teacache_probe = BlockInput("temb", 3)
    transformer_class = "CosmosTransformer3DModel"
    cfg_mode = "separate"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=16,
                             source="Cosmos-Predict2 2B defaults (no config.json at hand)")
    # the pipeline's defaults (768x1360, 35 steps, guidance 7; its own default negative prompt)
    default_workload = WorkloadDefaults(prompts=["A close-up shot of a ceramic vase with flowers on a wooden table"],
                                        num_inference_steps=35, guidance_scale=7.0)
