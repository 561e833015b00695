"""ConsisID adapter (diffusers ``ConsisIDPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class ConsisIDAdapter(DiffusersAdapter):
    """ConsisID: CogVideoX-style blocks (keywords) returning ``(hidden, encoder)``; batched CFG.

    The face ``perceiver_cross_attention`` layers, which add the identity features to the video
    stream after every ``cross_attn_interval``-th block, are not blocks of a list the parent calls
    in a row: they are left alone (a skipped block skips only its own work).
    """

    name = "consisid"
    default_pretrained = "BestWishYsh/ConsisID-preview"
    pipeline_classes = ("ConsisIDPipeline",)
    block_specs = (BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),)
    teacache_probe = BlockInput("temb", 2)
    transformer_class = "ConsisIDTransformer3DModel"
    cfg_mode = "batched"
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 42}, num_heads=48,
                             source="ConsisID-preview (CogVideoX-5B I2V based) defaults (no config.json at hand)")
    size_multiple = 16
    default_workload = WorkloadDefaults(prompts=["A woman smiling in a garden, cinematic"], num_inference_steps=50,
                                        guidance_scale=6.0, height=480, width=720, extra_call_kwargs={"num_frames": 49})
