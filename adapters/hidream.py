"""HiDream-I1 adapter (diffusers ``HiDreamImagePipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, SINGLE_STREAM, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class HiDreamAdapter(DiffusersAdapter):
    """HiDream-I1: dual-stream blocks (keywords) returning ``(hidden, encoder)``, then single-stream
    blocks over the joint [image, text] sequence returning one tensor. Every block gets its own
    Llama-3 layer's text appended by the parent (which trims the streams back after the block);
    mixture-of-experts feed-forwards. CFG is batched (cond and uncond in one transformer call).

    The transformer's text inputs are ``encoder_hidden_states_t5``, ``encoder_hidden_states_llama3``
    (layers first: its batch is dimension 1) and ``pooled_embeds``; the pipeline's embeddings
    inputs are ``prompt_embeds_t5``, ``prompt_embeds_llama3`` and ``pooled_prompt_embeds``.
    """

    name = "hidream"
    default_pretrained = "HiDream-ai/HiDream-I1-Full"
    pipeline_classes = ("HiDreamImagePipeline",)
    block_specs = (
        BlockSpec("double_stream_blocks", DUAL_STREAM_HIDDEN_FIRST),
        BlockSpec("single_stream_blocks", SINGLE_STREAM),
    )
    teacache_probe = BlockInput("temb")
    transformer_class = "HiDreamImageTransformer2DModel"
    cfg_mode = "batched"
    block_count_keys = {"double_stream_blocks": "num_layers", "single_stream_blocks": "num_single_layers"}
    default_info = ModelInfo(blocks={"double_stream_blocks": 16, "single_stream_blocks": 32}, num_heads=20,
                             source="HiDream-I1 defaults (no config.json at hand)")
    #: HiDream-I1-Full's settings (Dev: 28 steps, guidance 0; Fast: 16 steps, guidance 0)
    default_workload = WorkloadDefaults(prompts=["A cat holding a sign that says 'HiDream.ai'"],
                                        num_inference_steps=50, guidance_scale=5.0)
