"""FLUX.1 adapter (diffusers ``FluxPipeline`` and its variants)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, Adapter, BlockSpec, ModelInfo, WorkloadDefaults

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

#: FLUX.1-dev / schnell shape, used when no config is at hand (dry runs without weights).
FLUX1_BLOCKS = {"transformer_blocks": 19, "single_transformer_blocks": 38}
FLUX1_HEADS = 24


def pretrained_problem(pretrained: str | None, family: str) -> str | None:
    """Why ``model.pretrained`` cannot be loaded, or None. Hub ids are accepted as given."""
    if pretrained is None:
        return f"model={family} needs weights: set model.pretrained=<local directory or hub id>"
    path = Path(os.path.expanduser(pretrained))
    if path.exists():
        if not (path / "model_index.json").is_file():
            return f"model.pretrained={pretrained} has no model_index.json; point it at a diffusers pipeline directory (the one save_pretrained wrote)"
        return None
    if HUB_ID.match(pretrained) and not pretrained.startswith((".", "~")):
        return None
    return f"model.pretrained={pretrained} does not exist; give an existing local directory or a hub id like black-forest-labs/FLUX.1-dev"


def read_transformer_config(pretrained: str | None) -> tuple[dict, str] | None:
    """``transformer/config.json`` from a local directory or the local hub cache (no download)."""
    if pretrained is None:
        return None
    path = Path(os.path.expanduser(pretrained)) / "transformer" / "config.json"
    if not path.is_file() and HUB_ID.match(pretrained):
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(pretrained, "transformer/config.json", local_files_only=True))
        except Exception:  # not in the cache: the plan falls back to the family defaults
            return None
    if not path.is_file():
        return None
    return json.loads(path.read_text()), str(path)


class FluxAdapter(Adapter):
    """FLUX.1 dev/schnell/Krea/Kontext/Fill: 19 dual-stream + 38 single-stream blocks.

    Both block lists take and return ``(encoder_hidden_states, hidden_states)`` in diffusers 0.42,
    so caches treat them as one sequence.
    """

    name = "flux"
    pipeline_classes = (
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
        "FluxFillPipeline",
        "FluxKontextPipeline",
        "FluxKontextInpaintPipeline",
        "FluxControlPipeline",
    )
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
    )
    # The residual-diff threshold FBCache/DBCache users run FLUX.1-dev with (ParaAttention, cache-dit):
    # about 1.5-2x at 28-50 steps with little visible change.
    transform_defaults = {"cache.dbcache": {"threshold": 0.08}}

    def model_info(self, model_cfg: Any) -> ModelInfo:
        found = read_transformer_config(model_cfg.pretrained)
        if found is None:
            return ModelInfo(blocks=dict(FLUX1_BLOCKS), num_heads=FLUX1_HEADS, source="FLUX.1 defaults (no config.json at hand)")
        config, path = found
        return ModelInfo(
            blocks={"transformer_blocks": config["num_layers"], "single_transformer_blocks": config["num_single_layers"]},
            num_heads=config["num_attention_heads"],
            source=path,
        )

    def check(self, model_cfg: Any, workload: Any, dry_run: bool) -> list[str]:
        problem = pretrained_problem(model_cfg.pretrained, self.name)
        if problem and not (dry_run and model_cfg.pretrained is None):
            return [problem]
        return []

    def load(self, model_cfg: Any, device: torch.device, dtype: torch.dtype) -> Any:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(os.path.expanduser(model_cfg.pretrained), torch_dtype=dtype)
        return pipe.to(device)

    def workload_defaults(self) -> WorkloadDefaults:
        return WorkloadDefaults(
            prompts=["A cat holding a sign that says hello world", "An astronaut riding a horse on the moon, photo"],
            num_inference_steps=28,
            guidance_scale=3.5,
        )
