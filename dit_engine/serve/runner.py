"""The loaded, planned pipeline and the operations the server does to it.

Under a parallel plan every rank holds a :class:`PipelineRunner` and does the same operations in
the same order (rank 0's runner broadcasts each one first: :mod:`dit_engine.serve.control`).
"""

from __future__ import annotations

from typing import Any

from dit_engine import run_loop
from dit_engine.lora import load_lora, unload_lora, use_loras
from dit_engine.session import Session


class PipelineRunner:
    """The loaded, planned pipeline and what the server does to it: generate, load a LoRA, unload
    one, take the plan off."""

    def __init__(self, session: Session, pipe: Any = None):
        """``session`` prepared (the pipeline is loaded here), or prepared for ``pipe``, a
        pipeline the caller built (``session.prepare(pipe)``); the session's plan is applied to it once."""
        self.session = session
        self.adapter = session.adapter
        self.pipe = session.load() if pipe is None else pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.handle = session.apply(self.pipe)

    def generate(self, workload: Any, seeds: list[int], frames: bool, lora: tuple[tuple[str, float], ...]) -> tuple[list, dict]:
        """One pipeline call of ``workload.prompts`` (cache state afresh) with the LoRA adapters
        ``lora`` (``(name, scale)`` pairs; none: the base model); its images (or frames) and the
        handle's summary of it."""
        for transformer in self.adapter.transformers(self.pipe).values():
            use_loras(transformer, lora)
        self.handle.reset()
        images = run_loop.call_pipeline(self.pipe, self.adapter, workload, workload.prompts, seeds, frames=frames)
        return images, self.handle.summary()

    def load_lora(self, name: str, path: str) -> None:
        """Load the LoRA file at ``path`` into every transformer as ``name``."""
        for transformer in self.adapter.transformers(self.pipe).values():
            load_lora(transformer, path, name)

    def unload_lora(self, name: str) -> None:
        """Unload ``name`` from every transformer."""
        for transformer in self.adapter.transformers(self.pipe).values():
            unload_lora(transformer, name)

    def close(self) -> None:
        """Take the plan off the pipeline (where it can be taken off)."""
        if not self.session.plan.irreversible_steps():
            self.handle.remove()
