"""Testing helpers for dit_engine and its plugins: one system of tiny, offline, deterministic
diffusers pipelines, and the conformance suites that check adapters and techniques on them.

* :mod:`dit_engine.testing.zoo` builds one tiny pipeline per DiT family variant
  (``build_case("wan22")``); its one helper :mod:`dit_engine.testing.zoo._build` seeds every
  component and saves / reloads pipelines.
* Full FLUX.1, Wan 2.1 and Qwen-Image pipelines (text encoders and in-memory tokenizers included,
  so prompts are strings) live in the zoo as well (:mod:`~dit_engine.testing.zoo.flux_pipeline`,
  :mod:`~dit_engine.testing.zoo.wan_pipeline`, :mod:`~dit_engine.testing.zoo.qwen_image_pipeline`,
  :mod:`~dit_engine.testing.zoo.tokenizers`); their public names are importable from here::

    from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs

    pipe = build_tiny_flux_pipeline(seed=0)
    image = pipe(**tiny_flux_call_kwargs()).images      # (1, 3, 32, 32) float tensor in [0, 1]

* :mod:`dit_engine.testing.conformance`: ``AdapterConformance``, ``TransformConformance``,
  ``PipelineCase``.

Conventions of the full pipelines:

* ``seed`` fully determines every weight; the caller's global RNG state is left untouched.
* All modules are float32, on CPU, in ``eval()`` mode; the progress bar is disabled.
* ``*_call_kwargs()`` return a **fresh** dict on every call, including a freshly seeded
  ``torch.Generator``.  Do not reuse one kwargs dict for two runs: the generator is stateful and
  the second run would draw different initial noise.
* Every pipeline round-trips through ``save_pretrained`` / ``<PipelineClass>.from_pretrained``
  offline and gives bit-identical outputs afterwards.  Exception: without ``accelerate``
  installed, diffusers 0.42.1 cannot ``from_pretrained`` a ``WanTransformer3DModel`` at all (see
  :func:`reload_tiny_pipeline`, which works either way).
* Timing: a default 8-step call takes ~35-60 ms on one CPU thread; on a busy machine
  ``torch.set_num_threads(2)`` can make a call 10-50x slower than one thread.
"""

from dit_engine.testing.zoo._build import TINY_PROMPT, reload_tiny_pipeline
from dit_engine.testing.zoo.flux_pipeline import build_tiny_flux_pipeline, save_tiny_flux_pipeline, tiny_flux_call_kwargs
from dit_engine.testing.zoo.ltx_pipeline import build_tiny_ltx_video_pipeline, tiny_ltx_video_call_kwargs
from dit_engine.testing.zoo.qwen_image_pipeline import (
    build_tiny_qwen_image_pipeline,
    save_tiny_qwen_image_pipeline,
    tiny_qwen_image_call_kwargs,
)
from dit_engine.testing.zoo.tokenizers import tiny_clip_tokenizer, tiny_qwen2_tokenizer, tiny_t5_tokenizer
from dit_engine.testing.zoo.wan_pipeline import build_tiny_wan_pipeline, save_tiny_wan_pipeline, tiny_wan_call_kwargs

__all__ = [
    "TINY_PROMPT",
    "build_tiny_flux_pipeline",
    "build_tiny_ltx_video_pipeline",
    "build_tiny_qwen_image_pipeline",
    "build_tiny_wan_pipeline",
    "reload_tiny_pipeline",
    "save_tiny_flux_pipeline",
    "save_tiny_qwen_image_pipeline",
    "save_tiny_wan_pipeline",
    "tiny_clip_tokenizer",
    "tiny_flux_call_kwargs",
    "tiny_ltx_video_call_kwargs",
    "tiny_qwen2_tokenizer",
    "tiny_qwen_image_call_kwargs",
    "tiny_t5_tokenizer",
    "tiny_wan_call_kwargs",
]
