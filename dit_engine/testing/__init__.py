"""Testing helpers for dit_engine and its plugins.

:mod:`dit_engine.testing.pipelines` builds tiny, offline, deterministic diffusers pipelines
(FLUX, Wan 2.1, Qwen-Image) that run in milliseconds on a CPU and round-trip through
``save_pretrained`` / ``from_pretrained``.  It re-exports the per-family modules
:mod:`~dit_engine.testing.tiny_flux`, :mod:`~dit_engine.testing.tiny_wan`,
:mod:`~dit_engine.testing.tiny_qwen_image` and the in-memory tokenizers of
:mod:`~dit_engine.testing.tokenizers`.
"""

from dit_engine.testing.pipelines import (
    TINY_PROMPT,
    build_tiny_flux_pipeline,
    build_tiny_qwen_image_pipeline,
    build_tiny_wan_pipeline,
    reload_tiny_pipeline,
    save_tiny_flux_pipeline,
    save_tiny_qwen_image_pipeline,
    save_tiny_wan_pipeline,
    tiny_clip_tokenizer,
    tiny_flux_call_kwargs,
    tiny_qwen2_tokenizer,
    tiny_qwen_image_call_kwargs,
    tiny_t5_tokenizer,
    tiny_wan_call_kwargs,
)

__all__ = [
    "TINY_PROMPT",
    "build_tiny_flux_pipeline",
    "build_tiny_qwen_image_pipeline",
    "build_tiny_wan_pipeline",
    "reload_tiny_pipeline",
    "save_tiny_flux_pipeline",
    "save_tiny_qwen_image_pipeline",
    "save_tiny_wan_pipeline",
    "tiny_clip_tokenizer",
    "tiny_flux_call_kwargs",
    "tiny_qwen2_tokenizer",
    "tiny_qwen_image_call_kwargs",
    "tiny_t5_tokenizer",
    "tiny_wan_call_kwargs",
]
