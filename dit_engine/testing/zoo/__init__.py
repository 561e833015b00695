"""The tiny zoo: one tiny, offline diffusers pipeline per DiT family variant, for the family
conformance tests (tests/families) and the docs/models.md generator, plus the full FLUX.1, Wan 2.1
and Qwen-Image pipelines (text encoders and tokenizers included; ``flux_pipeline``, ``wan_pipeline``,
``qwen_image_pipeline``) that tests and plugins call with string prompts. One helper, ``_build``,
seeds every component of both kinds.

Each entry builds the family's real pipeline class around a tiny transformer (seeded random
weights, a few thousand parameters) and says how to call it. Text encoders are left out where the
pipeline takes prompt embeddings (``prompt_embeds`` & co. are random tensors of the right shape),
so an entry is a transformer config, a scheduler and a call: the denoising loop, the CFG logic and
the transformer calls are the pipeline's own. Most entries return latents (``output_type="latent"``)
to skip the VAE; the engine never touches it.

Adding a variant::

    @zoo_entry("sd3", adapter="sd3", pipeline="StableDiffusion3Pipeline")
    def sd3() -> PipelineCase:
        ...

``ZOO`` maps variant names to entries; :func:`build_case` builds one (cached per process).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the conformance module imports pytest; building a full pipeline must not need it
    from dit_engine.testing.conformance import PipelineCase


@dataclass(frozen=True)
class ZooEntry:
    """One tiny pipeline variant of a family.

    Attributes:
        variant: the zoo name (``sd35``, ``wan22``...).
        adapter: the adapter entry-point name that must serve it.
        pipeline: the diffusers pipeline class name it builds.
        build: returns a fresh :class:`PipelineCase`.
        note: what the tiny build leaves out or patches (shown in docs/models.md).
    """

    variant: str
    adapter: str
    pipeline: str
    build: Callable[[], PipelineCase]
    note: str = ""


ZOO: dict[str, ZooEntry] = {}

#: The modules that register entries (one per family group).
_GROUPS = ("embedded", "flux_lineage", "image_mmdit", "image_dit", "video_wan_cog", "video_other")


def zoo_entry(variant: str, *, adapter: str, pipeline: str, note: str = ""):
    """Register the decorated builder as the zoo entry ``variant``."""

    def register(build: Callable[[], PipelineCase]) -> Callable[[], PipelineCase]:
        if variant in ZOO:
            raise ValueError(f"zoo variant {variant!r} registered twice")
        ZOO[variant] = ZooEntry(variant, adapter, pipeline, build, note)
        return build

    return register


def load_zoo() -> dict[str, ZooEntry]:
    """Every registered entry (imports the group modules once)."""
    for group in _GROUPS:
        try:
            importlib.import_module(f"{__name__}.{group}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{group}":
                raise
    return ZOO


@functools.lru_cache(maxsize=None)
def build_case(variant: str) -> PipelineCase:
    """The tiny pipeline case of ``variant`` (built once per process; tests leave it as found)."""
    entry = load_zoo()[variant]
    case = entry.build()
    case.adapter = entry.adapter
    case.pipe.set_progress_bar_config(disable=True)
    return case
