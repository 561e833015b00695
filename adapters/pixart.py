"""PixArt-α / Σ adapter (diffusers ``PixArtAlphaPipeline``, ``PixArtSigmaPipeline`` and the PAG variant)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class PixArtAdapter(DiffusersAdapter):
    """PixArt-α / Σ: one list of ``BasicTransformerBlock``s with cross-attention (pattern E): hidden
    positional, the T5 text as the ``encoder_hidden_states`` keyword, one tensor back.

    The blocks are modulated by the adaLN-single embedding (``timestep`` keyword, shape (B, 6·D)),
    which TeaCache watches. CFG is batched (cond and uncond in one transformer call). PixArt-α at
    1024 px also feeds resolution / aspect-ratio conditions (``added_cond_kwargs``).
    """

    name = "pixart"
    default_pretrained = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
    pipeline_classes = (
        "PixArtAlphaPipeline",
        "PixArtSigmaPipeline",
        "PixArtSigmaPAGPipeline",
    )
    block_specs = (BlockSpec("transformer_blocks", CROSS_ATTENTION),)
    teacache_probe = BlockInput("timestep")
    transformer_class = "PixArtTransformer2DModel"
    cfg_mode = "batched"
    #: PixArt-α 1024's resolution / aspect-ratio conditions are batched tensors inside this dict
    batch_inputs = (*DiffusersAdapter.batch_inputs, "added_cond_kwargs")
    #: attn2 attends the T5 embeddings only.
    cross_attention_modules = ("transformer_blocks.*.attn2",)
    block_count_keys = {"transformer_blocks": "num_layers"}
    #: VAE 8x spatial x patch 2
    size_multiple = 16
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=16,
                             source="PixArt-Σ XL-2 1024 defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A small cactus with a happy face in the Sahara desert"],
                                        num_inference_steps=20, guidance_scale=4.5)
