"""The workload of a run: what to generate, with every model default filled in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dit_engine.adapter import Adapter


@dataclass
class Workload:
    """A workload with every model default filled in (see ``WorkloadConfig`` for the fields)."""

    name: str
    prompts: list[str]
    seed: int
    num_inference_steps: int
    guidance_scale: float
    height: int | None
    width: int | None
    batch_size: int
    warmup: int
    repeats: int
    call_kwargs: dict[str, Any] = field(default_factory=dict)

    def batches(self) -> list[list[int]]:
        """Prompt indices per pipeline call."""
        size = self.batch_size or len(self.prompts)
        indices = list(range(len(self.prompts)))
        return [indices[i : i + size] for i in range(0, len(indices), size)]

    def problems(self) -> list[str]:
        """What makes this workload impossible to run, each a one-line fix."""
        problems = []
        if not self.prompts:
            problems.append("workload.prompts is empty (or workload.num_prompts=0); give at least one prompt")
        if self.num_inference_steps < 1:
            problems.append(f"workload.num_inference_steps={self.num_inference_steps}; use 1 or more")
        if self.batch_size < 0:
            problems.append(f"workload.batch_size={self.batch_size}; use 0 (all prompts in one call) or more")
        if self.repeats < 1:
            problems.append(f"workload.repeats={self.repeats}; use 1 or more")
        if self.warmup < 0:
            problems.append(f"workload.warmup={self.warmup}; use 0 or more")
        return problems


def resolve_workload(node: DictConfig, adapter: Adapter) -> Workload:
    """Fill the workload's null keys from the adapter's defaults."""
    defaults = adapter.workload_defaults()

    def pick(value, default):
        return default if value is None else value

    prompts = list(pick(node.prompts, defaults.prompts))
    if node.num_prompts is not None and prompts:
        prompts = [prompts[i % len(prompts)] for i in range(node.num_prompts)]
    return Workload(
        name=node.name,
        prompts=prompts,
        seed=node.seed,
        num_inference_steps=pick(node.num_inference_steps, defaults.num_inference_steps),
        guidance_scale=pick(node.guidance_scale, defaults.guidance_scale),
        height=pick(node.height, defaults.height),
        width=pick(node.width, defaults.width),
        batch_size=node.batch_size,
        warmup=node.warmup,
        repeats=node.repeats,
        call_kwargs={**defaults.extra_call_kwargs, **OmegaConf.to_container(node.call_kwargs, resolve=True)},
    )
