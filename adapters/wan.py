"""Wan 2.1 / 2.2 adapter (diffusers ``WanPipeline``, image-to-video and video-to-video share the blocks)."""

from __future__ import annotations

from dit_engine.adapter import CROSS_ATTENTION, BlockSpec, ModelInfo, WorkloadDefaults, timestep_embedding_input
from dit_engine.diffusers_adapter import DiffusersAdapter

#: WanTransformerBlock: positional (hidden, encoder, temb, rotary), returns hidden only (pattern E).
#: Shared by the Wan-derived families (VACE, SkyReels-V2, ChronoEdit).
WAN_BLOCK = CROSS_ATTENTION


class WanAdapter(DiffusersAdapter):
    """Wan 2.1/2.2 text/image-to-video: one list of cross-attention blocks.

    The pipelines run cond and uncond as separate transformer calls when ``guidance_scale > 1``
    (two CFG branches per step); Wan 2.2 A14B alternates two experts, ``transformer`` (high noise)
    and ``transformer_2`` (low noise), at ``boundary_ratio``: each gets its own cache state.
    I2V / FLF2V feed CLIP image tokens through the same blocks (``encoder_hidden_states_image``).
    """

    name = "wan"
    default_pretrained = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    pipeline_classes = ("WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline")
    transformer_attrs = ("transformer", "transformer_2")
    block_specs = (BlockSpec("blocks", WAN_BLOCK),)
    teacache_probe = staticmethod(timestep_embedding_input)
    transformer_class = "WanTransformer3DModel"
    cfg_mode = "separate"
    #: attn2 attends the text (and image) embeddings, which every rank holds whole.
    cross_attention_modules = ("blocks.*.attn2",)
    block_count_keys = {"blocks": "num_layers"}
    default_info = ModelInfo(blocks={"blocks": 30}, num_heads=12, source="Wan 2.1 T2V 1.3B defaults (no config.json at hand)")
    #: VAE 8x spatial x patch 2
    size_multiple = 16
    default_workload = WorkloadDefaults(
        prompts=["A cat walks on the grass, realistic"],
        num_inference_steps=50,
        guidance_scale=5.0,
        extra_call_kwargs={"num_frames": 81},
    )

    def cfg_output_shape(self, transformer, hidden_states):
        # text-to-video: the latent video in and out; image-to-video stacks the condition on the
        # channels (in 36, out 16): unknown here, learned from the first step
        config = transformer.config
        return tuple(hidden_states.shape) if config.out_channels in (None, config.in_channels) else None
