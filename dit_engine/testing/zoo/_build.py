"""The one seeding and building helper of the tiny pipelines (zoo entries and the full FLUX, Wan and
Qwen-Image pipelines alike): seeded construction, random embeddings, generators, saving, reloading.

Component ``k`` of a pipeline built with ``seed`` is initialised under ``torch.manual_seed(seed *
SEED_STRIDE + k)`` inside ``torch.random.fork_rng``, so components get different but reproducible
weights, two seeds never share a stream, and the caller's RNG state is left untouched.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TINY_PROMPT", "TRANSFORMER", "VAE", "TEXT_ENCODER", "TEXT_ENCODER_2",
    "seeded", "seeded_module", "embeds", "generator", "flow_match_scheduler", "save_pipeline", "reload_tiny_pipeline",
]

#: Default prompt of every ``*_call_kwargs`` helper.  Short, because the tiny tokenizers are
#: character level (one token per character, roughly).
TINY_PROMPT = "a tiny red fox"

SEED_STRIDE = 16
#: The component numbers of a pipeline's seeded modules.
TRANSFORMER, VAE, TEXT_ENCODER, TEXT_ENCODER_2 = 0, 1, 2, 3


@contextlib.contextmanager
def seeded(seed: int, component: int) -> Iterator[None]:
    """Seed torch for one component without disturbing the caller's RNG state."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * SEED_STRIDE + component)
        yield


def seeded_module(cls: type, seed: int = 0, component: int = 0, **config: Any) -> torch.nn.Module:
    """``cls(**config)`` with seeded random weights, in ``eval()`` mode (float32, CPU)."""
    with seeded(seed, component):
        module = cls(**config)
    # Weights are created in float32 already; a ``.to(dtype)`` here would only make diffusers warn.
    return module.eval()


def embeds(*shape: int, seed: int = 1) -> torch.Tensor:
    """A reproducible random tensor (prompt embeddings and the like), independent of global RNG."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def generator(seed: int = 0) -> torch.Generator:
    """A fresh CPU generator: every call of a pipeline needs its own."""
    return torch.Generator("cpu").manual_seed(seed)


def flow_match_scheduler(**config: Any):
    """``FlowMatchEulerDiscreteScheduler`` (the scheduler of most rectified-flow DiTs)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


def save_pipeline(pipe: Any, path: str | Path) -> Path:
    """``pipe.save_pretrained(path)`` (creating the folder); returns ``path`` as a ``Path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(path))
    return path


def _load_diffusers_model_directly(model_cls: Any, folder: Path) -> torch.nn.Module:
    """``from_config`` + ``load_state_dict`` from the safetensors files in ``folder`` (no accelerate)."""
    from safetensors.torch import load_file

    model = model_cls.from_config(model_cls.load_config(str(folder)))
    index_file = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index_file.is_file():
        shards = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
    else:
        shards = ["diffusion_pytorch_model.safetensors"]
    state_dict: dict[str, torch.Tensor] = {}
    for shard in shards:
        state_dict.update(load_file(str(folder / shard)))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def reload_tiny_pipeline(path: str | Path, pipeline_cls: Any = None, **from_pretrained_kwargs: Any):
    """Reload a pipeline saved by a ``save_tiny_*_pipeline`` helper (or any small local pipeline folder).

    ``pipeline_cls`` defaults to the diffusers class named in ``model_index.json`` (``_class_name``).
    The progress bar of the result is disabled.

    Pitfall worked around here: in diffusers 0.42.1, ``ModelMixin.from_pretrained`` refuses to load any
    model class that declares ``_keep_in_fp32_modules`` (e.g. ``WanTransformer3DModel``) when
    ``accelerate`` is not installed ("`low_cpu_mem_usage` cannot be False when `keep_in_fp32_modules`
    is True"; passing ``low_cpu_mem_usage=None`` fails later with ``NameError: accelerate``).  When
    ``accelerate`` is missing, such components are therefore built with ``from_config`` and filled
    with ``load_state_dict`` from the saved safetensors, then handed to ``from_pretrained`` as
    component overrides; everything else goes through the normal ``from_pretrained`` path.  With
    ``accelerate`` installed this is exactly ``pipeline_cls.from_pretrained(path, **kwargs)``.
    """
    import diffusers
    from diffusers.utils import is_accelerate_available

    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    # Resolve the concrete class: ``DiffusionPipeline.from_pretrained`` would ignore a passed
    # component that is an *optional* component of the concrete class (e.g. WanPipeline.transformer)
    # because it checks ``cls._optional_components`` of the class it was called on.
    cls = pipeline_cls or getattr(diffusers, index["_class_name"], diffusers.DiffusionPipeline)
    kwargs = dict(from_pretrained_kwargs)
    if not is_accelerate_available():
        for name, spec in index.items():
            if name.startswith("_") or name in kwargs or not isinstance(spec, list) or len(spec) != 2:
                continue
            library, class_name = spec
            model_cls = getattr(diffusers, class_name, None) if library == "diffusers" else None
            if model_cls is not None and getattr(model_cls, "_keep_in_fp32_modules", None):
                kwargs[name] = _load_diffusers_model_directly(model_cls, path / name)
    pipe = cls.from_pretrained(str(path), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe
