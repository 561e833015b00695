"""CogView3-Plus adapter (diffusers ``CogView3PlusPipeline``)."""

from __future__ import annotations

from dit_engine.adapter import DUAL_STREAM_HIDDEN_FIRST, BlockInput, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


class CogView3PlusAdapter(DiffusersAdapter):
    """CogView3-Plus: one list of dual-stream blocks called with keywords (``hidden_states``,
    ``encoder_hidden_states``, the timestep + size embedding as ``emb``), returning
    ``(hidden, encoder)`` (pattern D). CFG is batched (cond and uncond in one call).
    """

    name = "cogview3plus"
    default_pretrained = "THUDM/CogView3-Plus-3B"
    pipeline_classes = ("CogView3PlusPipeline",)
    block_specs = (BlockSpec("transformer_blocks", DUAL_STREAM_HIDDEN_FIRST),)
    teacache_probe = BlockInput("emb", 2)
    transformer_class = "CogView3PlusTransformer2DModel"
    cfg_mode = "batched"
    batch_inputs = (*DiffusersAdapter.batch_inputs, "original_size", "target_size", "crop_coords")
    block_count_keys = {"transformer_blocks": "num_layers"}
    #: VAE 8x spatial x patch 2
    size_multiple = 16
    default_info = ModelInfo(blocks={"transformer_blocks": 30}, num_heads=64,
                             source="CogView3-Plus-3B defaults (no config.json at hand)")
    default_workload = WorkloadDefaults(prompts=["A vibrant cherry red sports car on a winding mountain road"],
                                        num_inference_steps=50, guidance_scale=7.0)
