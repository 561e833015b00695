"""Tiny, offline, deterministic 🤗 diffusers pipelines for tests and plugin authors.

Every builder returns a *real* diffusers pipeline object (``FluxPipeline``, ``WanPipeline``,
``QwenImagePipeline``) whose components are genuine diffusers / transformers classes built from
miniature configs with seeded random weights.  Nothing is downloaded: tokenizers are constructed
from vocabularies built in memory, so the helpers work with ``HF_HUB_OFFLINE=1`` and no network.

The pipelines produce noise, not pictures, but they exercise exactly the same code paths as the
full-size models (text encoding, latent packing, scheduler, transformer blocks, VAE decode), which
is what an inference engine needs to test block-level transforms (caching, compilation, hooks...).

Typical use::

    from dit_engine.testing.pipelines import build_tiny_flux_pipeline, tiny_flux_call_kwargs

    pipe = build_tiny_flux_pipeline(seed=0)
    image = pipe(**tiny_flux_call_kwargs()).images      # (1, 3, 32, 32) float tensor in [0, 1]

Conventions shared by all builders:

* ``seed`` fully determines every weight.  The builders seed each component from ``seed`` inside
  ``torch.random.fork_rng`` so the caller's global RNG state is left untouched.
* All modules are float32, on CPU, in ``eval()`` mode; the progress bar is disabled.
* ``*_call_kwargs()`` return a **fresh** dict on every call, including a freshly seeded
  ``torch.Generator``.  Do not reuse one kwargs dict for two runs: the generator is stateful and
  the second run would draw different initial noise.
* Every pipeline round-trips through ``save_pretrained`` / ``<PipelineClass>.from_pretrained``
  offline and gives bit-identical outputs afterwards (float32 safetensors; tokenizers are saved as
  ``tokenizer.json`` and reload to the same class).  A reloaded pipeline shows its progress bar
  again unless you call ``pipe.set_progress_bar_config(disable=True)``.  Exception: without
  ``accelerate`` installed, diffusers 0.42.1 cannot ``from_pretrained`` a ``WanTransformer3DModel``
  at all (see :func:`reload_tiny_pipeline`, which works either way).
* Timing: a default 8-step call takes ~35-60 ms on one CPU thread.  These models are so small that
  intra-op threading only adds overhead; on a busy machine ``torch.set_num_threads(2)`` can make a
  call 10-50x slower than one thread.

Where things live (everything is re-exported here, so ``from dit_engine.testing.pipelines import X``
keeps working for every public name):

* FLUX.1: :mod:`dit_engine.testing.tiny_flux` (``build_tiny_flux_pipeline``,
  ``tiny_flux_call_kwargs``, ``save_tiny_flux_pipeline``).
* Wan 2.1: :mod:`dit_engine.testing.tiny_wan` (``build_tiny_wan_pipeline``,
  ``tiny_wan_call_kwargs``, ``save_tiny_wan_pipeline``).
* Qwen-Image: :mod:`dit_engine.testing.tiny_qwen_image` (``build_tiny_qwen_image_pipeline``,
  ``tiny_qwen_image_call_kwargs``, ``save_tiny_qwen_image_pipeline``).
* Tokenizers built in memory: :mod:`dit_engine.testing.tokenizers` (``tiny_clip_tokenizer``,
  ``tiny_t5_tokenizer``, ``tiny_qwen2_tokenizer``).
* Shared by all families: :mod:`dit_engine.testing._common` (``TINY_PROMPT``, per-component
  seeding, saving, and ``reload_tiny_pipeline``).
"""

from __future__ import annotations

# Module attributes this module had before the split (kept so ``dir()`` of it is unchanged).
import contextlib  # noqa: F401
import string  # noqa: F401
from collections.abc import Iterator  # noqa: F401
from pathlib import Path  # noqa: F401
from typing import Any  # noqa: F401

import torch  # noqa: F401

from dit_engine.testing._common import TINY_PROMPT, reload_tiny_pipeline
from dit_engine.testing.tiny_flux import build_tiny_flux_pipeline, save_tiny_flux_pipeline, tiny_flux_call_kwargs
from dit_engine.testing.tiny_qwen_image import (
    build_tiny_qwen_image_pipeline,
    save_tiny_qwen_image_pipeline,
    tiny_qwen_image_call_kwargs,
)
from dit_engine.testing.tiny_wan import build_tiny_wan_pipeline, save_tiny_wan_pipeline, tiny_wan_call_kwargs
from dit_engine.testing.tokenizers import tiny_clip_tokenizer, tiny_qwen2_tokenizer, tiny_t5_tokenizer

__all__ = [
    "TINY_PROMPT",
    "build_tiny_flux_pipeline",
    "tiny_flux_call_kwargs",
    "save_tiny_flux_pipeline",
    "build_tiny_wan_pipeline",
    "tiny_wan_call_kwargs",
    "save_tiny_wan_pipeline",
    "build_tiny_qwen_image_pipeline",
    "tiny_qwen_image_call_kwargs",
    "save_tiny_qwen_image_pipeline",
    "reload_tiny_pipeline",
    "tiny_clip_tokenizer",
    "tiny_t5_tokenizer",
    "tiny_qwen2_tokenizer",
]
