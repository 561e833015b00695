"""``ClassLabelDiTPipeline``: diffusers' ``DiTPipeline`` that takes ImageNet class ids as prompts.

A plugin may ship its own pipeline class; its adapter names that class, and dit_engine picks the
adapter of the most specific class, so ``model=example_dit`` serves this pipeline while the
first-party ``model=dit`` keeps serving plain ``DiTPipeline``.
"""

from __future__ import annotations

from diffusers import DiTPipeline


class ClassLabelDiTPipeline(DiTPipeline):
    """``pipe(prompt=["207", "360"])``: each prompt is an ImageNet class id (0-999)."""

    def __call__(self, prompt=None, class_labels=None, **kwargs):
        if class_labels is None:
            prompts = [prompt] if isinstance(prompt, (str, int)) else list(prompt or [])
            bad = [p for p in prompts if not (str(p).strip().isdigit() and int(p) < 1000)]
            if not prompts or bad:
                raise ValueError(f"ClassLabelDiTPipeline takes ImageNet class ids 0-999 as prompts, got {bad[:1] or prompts}")
            class_labels = [int(p) for p in prompts]
        return super().__call__(class_labels=class_labels, **kwargs)
