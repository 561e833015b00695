"""Base of adapters for pipelines loaded with ``DiffusionPipeline.from_pretrained`` (first-party and plugins)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import torch

from dit_engine.adapter import Adapter, ModelInfo

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


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


#: Cache thresholds that FBCache/DBCache users run the large diffusers DiTs with (ParaAttention,
#: cache-dit: about 1.5-2x at 28-50 steps with little visible change); DBPrune decides per block,
#: where a smaller change already matters.
LARGE_DIT_CACHE_DEFAULTS = {
    "cache.dbcache": {"threshold": 0.08},
    "cache.scm": {"threshold": 0.08},
    "cache.dbprune": {"threshold": 0.05},
    # TeaCache / MagCache thresholds; their coefficients and curves come from a calibration run
    "cache.teacache": {"threshold": 0.2},
    "cache.magcache": {"threshold": 0.06},
}


class DiffusersAdapter(Adapter):
    """An adapter whose model loads with ``DiffusionPipeline.from_pretrained(model.pretrained)``.

    Attributes:
        default_info: shape facts of the family's flagship checkpoint, used when no
            ``config.json`` is at hand (dry runs without weights).
        block_count_keys: block-list path -> ``config.json`` key holding its length.
        heads_key: ``config.json`` key of the attention head count.
    """

    default_info: ClassVar[ModelInfo]
    block_count_keys: ClassVar[dict[str, str]] = {}
    transform_defaults = LARGE_DIT_CACHE_DEFAULTS
    heads_key: ClassVar[str] = "num_attention_heads"

    def model_info(self, model_cfg: Any) -> ModelInfo:
        found = read_transformer_config(model_cfg.pretrained)
        if found is None:
            return self.default_info
        config, path = found
        return ModelInfo(
            blocks={block_path: config[key] for block_path, key in self.block_count_keys.items()},
            num_heads=config[self.heads_key],
            source=path,
        )

    def check(self, model_cfg: Any, workload: Any, dry_run: bool) -> list[str]:
        problem = pretrained_problem(model_cfg.pretrained, self.name)
        if problem and not (dry_run and model_cfg.pretrained is None):
            return [problem]
        return []

    def load(self, model_cfg: Any, dtype: torch.dtype, load_kwargs: dict[str, Any]) -> Any:
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.from_pretrained(os.path.expanduser(model_cfg.pretrained), torch_dtype=dtype, **load_kwargs)
