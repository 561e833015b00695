"""Base of adapters for pipelines loaded with ``DiffusionPipeline.from_pretrained`` (first-party and plugins)."""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from dit_engine.adapter import Adapter, ModelInfo, WorkloadDefaults
from dit_engine.errors import DitEngineError

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def pretrained_problem(pretrained: str | None, family: str, loads: bool = True, revision: str | None = None) -> str | None:
    """Why ``model.pretrained`` cannot be loaded, or None. A hub id must be in the local cache
    when offline and something is to be loaded (``loads``; a dry run loads nothing)."""
    if pretrained is None:
        return f"model={family} needs weights: set model.pretrained=<local directory or hub id>"
    path = Path(os.path.expanduser(pretrained))
    if path.exists():
        if not (path / "model_index.json").is_file():
            return f"model.pretrained={pretrained} has no model_index.json; point it at a diffusers pipeline directory (the one save_pretrained wrote)"
        return components_problem(path, pretrained)
    if HUB_ID.match(pretrained) and not pretrained.startswith((".", "~")):
        return hub_cache_problem(pretrained, revision) if loads else None
    return f"model.pretrained={pretrained} does not exist; give an existing local directory or a hub id like black-forest-labs/FLUX.1-dev"


def components_problem(path: Path, pretrained: str) -> str | None:
    """Why a local pipeline directory cannot load: a broken model_index.json or a missing component."""
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError) as err:
        return f"model.pretrained={pretrained}: model_index.json is not valid JSON ({err}); save the pipeline again with save_pretrained"
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        return f"model.pretrained={pretrained}: model_index.json names no pipeline class; save the pipeline again with save_pretrained"
    missing = [name for name, spec in index.items()
               if not name.startswith("_") and isinstance(spec, list) and spec and spec[0] is not None and not (path / name).is_dir()]
    declared = [name for name, spec in index.items() if not name.startswith("_") and isinstance(spec, list)]
    if missing or not declared:
        what = f"lacks the component folder(s) {', '.join(missing)}" if missing else "lists no components"
        return f"model.pretrained={pretrained} {what} that model_index.json names; save the whole pipeline with save_pretrained"
    return None


def hub_cache_problem(hub_id: str, revision: str | None = None) -> str | None:
    """Offline (``HF_HUB_OFFLINE=1``), a hub id must already be in the local cache: say so up front
    instead of letting diffusers print its connection warnings and fail after them."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return None  # online: diffusers downloads what is missing, as the user asked
    if isinstance(try_to_load_from_cache(hub_id, "model_index.json", revision=revision), str):
        return None
    return (f"model.pretrained={hub_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
            f"download it once online (huggingface-cli download {hub_id}) or give a local directory")


def read_vae_class(pretrained: str | None) -> str | None:
    """The VAE class a local pipeline directory's ``model_index.json`` names (None: unknown)."""
    if pretrained is None:
        return None
    try:
        spec = json.loads((Path(os.path.expanduser(pretrained)) / "model_index.json").read_text()).get("vae")
    except (OSError, ValueError, AttributeError):
        return None
    return spec[1] if isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], str) else None


def read_transformer_config(pretrained: str | None, revision: str | None = None) -> tuple[dict, str] | None:
    """``transformer/config.json`` from a local directory or the local hub cache (no download)."""
    if pretrained is None:
        return None
    path = Path(os.path.expanduser(pretrained)) / "transformer" / "config.json"
    if not path.is_file() and HUB_ID.match(pretrained):
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(pretrained, "transformer/config.json", revision=revision, local_files_only=True))
        except Exception:  # not in the cache: the plan falls back to the family defaults
            return None
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DitEngineError(f"{path} is not valid JSON ({err}); repair the model directory or save it again with save_pretrained") from None
    if not isinstance(config, dict):
        raise DitEngineError(f"{path} is not a model config (a JSON object); repair the model directory or save it again with save_pretrained")
    return config, str(path)


class DiffusersAdapter(Adapter):
    """An adapter whose model loads with ``DiffusionPipeline.from_pretrained(model.pretrained)``.

    Attributes:
        default_info: shape facts of the family's flagship checkpoint, used when no
            ``config.json`` is at hand (dry runs without weights).
        block_count_keys: block-list path -> ``config.json`` key holding its length.
        heads_key: ``config.json`` key of the attention head count.
        size_multiple: height and width must be multiples of this (VAE factor x patch size);
            diffusers would otherwise round them silently.
        default_workload: the family's usual prompts, steps and guidance (``workload_defaults``).
    """

    default_info: ClassVar[ModelInfo]
    #: Real checkpoints run in bfloat16 (``model.dtype=float32`` to override).
    default_dtype: ClassVar[str] = "bfloat16"
    #: The family's usual workload (prompts, steps, guidance, extra call arguments).
    default_workload: ClassVar[WorkloadDefaults | None] = None
    block_count_keys: ClassVar[dict[str, str]] = {}
    heads_key: ClassVar[str] = "num_attention_heads"
    size_multiple: ClassVar[int] = 16

    def workload_defaults(self) -> WorkloadDefaults:
        if self.default_workload is None:
            raise NotImplementedError(f"adapter '{self.name}' sets no default_workload")
        return copy.deepcopy(self.default_workload)

    def model_info(self, model_cfg: Any) -> ModelInfo:
        vae_class = read_vae_class(model_cfg.pretrained)
        found = read_transformer_config(model_cfg.pretrained, model_cfg.get("revision"))
        if found is None:
            return replace(self.default_info, vae_class=vae_class)
        config, path = found
        keys = [*self.block_count_keys.values(), self.heads_key]
        bad = [key for key in keys if not isinstance(config.get(key), int) or isinstance(config.get(key), bool) or config[key] < 1]
        if bad:
            raise DitEngineError(f"{path} lacks {', '.join(bad)} (positive integers) that a {self.name} transformer config has; "
                                 f"point model.pretrained at a {self.name} pipeline directory")
        return ModelInfo(
            blocks={block_path: config[key] for block_path, key in self.block_count_keys.items()},
            num_heads=config[self.heads_key],
            source=path,
            vae_class=vae_class,
        )

    def check(self, model_cfg: Any, workload: Any, dry_run: bool) -> list[str]:
        problems = []
        problem = pretrained_problem(model_cfg.pretrained, self.name, loads=not dry_run, revision=model_cfg.get("revision"))
        if problem and not (dry_run and model_cfg.pretrained is None):
            problems.append(problem)
        for key in ("height", "width"):
            value = getattr(workload, key)
            if value is not None and (value < self.size_multiple or value % self.size_multiple):
                problems.append(f"workload.{key}={value}: model={self.name} generates sizes that are multiples of "
                                f"{self.size_multiple}; use e.g. {max(self.size_multiple, round(value / self.size_multiple) * self.size_multiple)}")
        return problems

    def pipeline_class(self, model_cfg: Any) -> type | None:
        """The class named in a local directory's ``model_index.json`` (None for hub ids)."""
        if model_cfg.pretrained is None:
            return None
        index = Path(os.path.expanduser(model_cfg.pretrained)) / "model_index.json"
        try:
            name = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError):
            return None
        import diffusers

        return getattr(diffusers, name, None) if isinstance(name, str) else None

    def load(self, model_cfg: Any, dtype: torch.dtype, load_kwargs: dict[str, Any]) -> Any:
        from diffusers import DiffusionPipeline

        if model_cfg.get("revision"):
            load_kwargs = {**load_kwargs, "revision": model_cfg.revision}
        return DiffusionPipeline.from_pretrained(os.path.expanduser(model_cfg.pretrained), dtype=dtype, **load_kwargs)
