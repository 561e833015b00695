"""Sana adapter (diffusers ``SanaPipeline``, Sana-Sprint, PAG and ControlNet variants)."""

from __future__ import annotations

from dit_engine.adapter import BlockInput, BlockPattern, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter

#: SanaTransformerBlock: seven positional arguments (hidden, attention_mask, encoder,
#: encoder_attention_mask, timestep, height, width); returns the image stream alone (pattern E).
SANA_BLOCK = BlockPattern(name="cross-attn(hidden)", encoder_position=2, returns=("hidden",))


class SanaAdapter(DiffusersAdapter):
    """Sana: one list of linear-attention DiT blocks with cross-attention to the Gemma-2 text,
    called positionally; TeaCache watches the adaLN-single embedding (fifth positional argument).

    CFG is batched (cond and uncond in one call); Sana-Sprint is guidance-distilled (one call).
    """

    name = "sana"
    default_pretrained = "Efficient-Large-Model/Sana_1600M_1024px_diffusers"
    pipeline_classes = (
        "SanaPipeline",
        "SanaPAGPipeline",
        "SanaControlNetPipeline",
        "SanaSprintPipeline",
        "SanaSprintImg2ImgPipeline",
    )
    block_specs = (BlockSpec("transformer_blocks", SANA_BLOCK),)
    teacache_probe = BlockInput("timestep", 4)
    transformer_class = "SanaTransformer2DModel"
    cfg_mode = "batched"
    #: attn2 attends the Gemma-2 embeddings only.
    cross_attention_modules = ("transformer_blocks.*.attn2",)
    block_count_keys = {"transformer_blocks": "num_layers"}
    #: DC-AE 32x spatial x patch 1
    size_multiple = 32
    default_info = ModelInfo(blocks={"transformer_blocks": 20}, num_heads=70,
                             source="Sana 1600M 1024px defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A cyberpunk cat with a neon sign that says 'Sana'"],
                                        num_inference_steps=20, guidance_scale=4.5)
