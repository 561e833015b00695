"""Kandinsky 5.0 adapter (diffusers ``Kandinsky5T2VPipeline`` and its variants)."""

from __future__ import annotations

import dataclasses
from typing import Any

from dit_engine.adapter import BlockInput, BlockPattern, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter, read_transformer_config
from dit_engine.errors import DitEngineError

#: Kandinsky 5's decoder blocks: called positionally as ``(visual_embed, text_embed, time_embed,
#: rope, sparse_params)``; the text is read-only context and the image stream comes back alone.
KANDINSKY5_VISUAL = BlockPattern(name="cross-attn(visual_embed)", hidden="visual_embed", encoder="text_embed",
                                 returns=("hidden",))


def attention_heads(config: Any) -> int:
    """Kandinsky 5's head count: its config has none; every attention uses ``head_dim =
    sum(axes_dims)`` (the RoPE axes), so ``heads = model_dim / sum(axes_dims)``."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    model_dim, axes_dims = get("model_dim"), get("axes_dims")
    if not isinstance(model_dim, int) or not axes_dims or not all(isinstance(a, int) and a > 0 for a in axes_dims) \
            or model_dim % sum(axes_dims):
        raise DitEngineError(f"a Kandinsky 5 transformer config needs model_dim divisible by sum(axes_dims); "
                             f"got model_dim={model_dim}, axes_dims={axes_dims}")
    return model_dim // sum(axes_dims)


class Kandinsky5Adapter(DiffusersAdapter):
    """Kandinsky 5.0: 32 visual decoder blocks (:data:`KANDINSKY5_VISUAL`); the text encoder blocks
    that run before them are left alone. Separate cond / uncond calls when ``guidance_scale > 1``.

    The head count is not in the config: it is ``model_dim / sum(axes_dims)`` (1792 / 64 = 28 for
    the Lite models).
    """

    name = "kandinsky5"
    default_pretrained = "kandinskylab/Kandinsky-5.0-T2V-Lite-sft-5s-Diffusers"
    pipeline_classes = (
        "Kandinsky5T2VPipeline",
        "Kandinsky5I2VPipeline",
        "Kandinsky5T2IPipeline",
        "Kandinsky5I2IPipeline",
    )
    block_specs = (
        BlockSpec("visual_transformer_blocks", KANDINSKY5_VISUAL),
    )
    teacache_probe = BlockInput("time_embed", 2)
    transformer_class = "Kandinsky5Transformer3DModel"
    cfg_mode = "separate"
    block_count_keys = {"visual_transformer_blocks": "num_visual_blocks"}
    #: checked as a positive integer by DiffusersAdapter.model_info; the heads follow from it
    heads_key = "model_dim"
    default_info = ModelInfo(blocks={"visual_transformer_blocks": 32}, num_heads=28,
                             source="Kandinsky 5.0 Lite defaults (no config.json at hand)")
    # the T2V Lite example: 512x768, 121 frames (5 s), 50 steps, guidance 5
    default_workload = WorkloadDefaults(prompts=["A cat and a dog baking a cake together in a kitchen."],
                                        num_inference_steps=50, guidance_scale=5.0, height=512, width=768,
                                        extra_call_kwargs={"num_frames": 121})

    def model_info(self, model_cfg: Any) -> ModelInfo:
        info = super().model_info(model_cfg)
        found = read_transformer_config(model_cfg.pretrained) if info is not self.default_info else None
        if found is None:
            return info
        return dataclasses.replace(info, num_heads=attention_heads(found[0]))

    def model_info_from_pipeline(self, pipe: Any) -> ModelInfo:
        info = super().model_info_from_pipeline(pipe)
        transformer = next(iter(self.transformers(pipe).values()))
        return dataclasses.replace(info, num_heads=attention_heads(transformer.config))
