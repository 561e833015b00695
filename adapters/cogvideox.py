"""CogVideoX (1.0, 1.5) adapter (diffusers ``CogVideoXPipeline`` and its variants)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class CogVideoXAdapter(DiffusersAdapter):
    """CogVideoX (1.0, 1.5): Expert-adaLN blocks over text and video tokens (keywords ``hidden_states``,
    ``encoder_hidden_states``, ``temb``, ``image_rotary_emb``) returning ``(hidden, encoder)``;
    batched CFG (cond and uncond in one transformer call)."""

    name = "cogvideox"
    default_pretrained = "THUDM/CogVideoX-2b"
    pipeline_classes = (
        "CogVideoXPipeline",
        "CogVideoXImageToVideoPipeline",
        "CogVideoXVideoToVideoPipeline",
        "CogVideoXFunControlPipeline",
    )
    block_specs = (BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),)
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "CogVideoXTransformer3DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 30}, num_heads=30, source="CogVideoX-2b defaults (no config.json at hand)")
    #: VAE 8x spatial x patch 2
    size_multiple = 16
    default_workload = WorkloadDefaults(prompts=["A panda playing a guitar in a bamboo forest"], num_inference_steps=50,
                                        guidance_scale=6.0, height=480, width=720, extra_call_kwargs={"num_frames": 49})
