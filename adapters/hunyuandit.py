"""HunyuanDiT adapter (diffusers ``HunyuanDiTPipeline`` and its PAG / ControlNet variants)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HunyuanDiTAdapter(DiffusersAdapter):
    """HunyuanDiT: one list of U-ViT style blocks with cross-attention to the Bert + mT5 text
    (pattern E): hidden positional, ``temb`` / ``encoder_hidden_states`` / ``image_rotary_emb``
    keywords, one tensor back. Blocks after the middle also get a long ``skip=`` from an early
    block; the parent keeps those, so a cached block's output feeds them. CFG is batched.
    """

    name = "hunyuandit"
    default_pretrained = "Tencent-Hunyuan/HunyuanDiT-v1.2-Diffusers"
    pipeline_classes = (
        "HunyuanDiTPipeline",
        "HunyuanDiTPAGPipeline",
        "HunyuanDiTControlNetPipeline",
    )
    block_specs = (BlockSpec("blocks", CROSS_ATTENTION),)
    teacache_probe = BlockInput("temb")
    transformer_class = "HunyuanDiT2DModel"
    cfg_mode = "batched"
    batch_inputs = (*DiffusersAdapter.batch_inputs, "text_embedding_mask", "encoder_hidden_states_t5",
                    "text_embedding_mask_t5", "image_meta_size", "style")
    #: attn2 attends the (Bert + mT5) text only.
    cross_attention_modules = ("blocks.*.attn2",)
    block_count_keys = {"blocks": "num_layers"}
    #: VAE 8x spatial x patch 2
    size_multiple = 16
    default_info = ModelInfo(blocks={"blocks": 40}, num_heads=16,
                             source="HunyuanDiT v1.2 (DiT-g/2) defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["An astronaut riding a horse"], num_inference_steps=50,
                                        guidance_scale=5.0)
