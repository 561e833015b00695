"""The workload of a run: what to generate, with every model default filled in."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from dit_engine.config.schema import EMBEDDED_SIDE

if TYPE_CHECKING:  # the adapter module imports torch; the workload checks run before torch loads
    from dit_engine.adapter import Adapter

#: The largest |guidance_scale| accepted: trained guidance scales are single digits (FLUX's
#: distilled guidance ~3.5, CFG 1-15); far beyond, the guided prediction overflows to Inf / NaN and
#: every image comes out flat black.
MAX_GUIDANCE_SCALE = 1000.0
#: The largest seed: torch generators take an unsigned 64-bit seed (image i uses ``seed + i``).
MAX_SEED = 2**64 - 1
#: The largest height or width: 16384 px is beyond every DiT's training size, and a larger side
#: cannot fit in memory (a 1048576^2 image is 3 TB of pixels before a single block runs).
MAX_SIDE = 16384
#: The most denoising steps: schedulers are trained on 1000 timesteps; far more only repeats them.
MAX_STEPS = 10000
#: Where each pipeline-call argument the engine sets comes from (``workload.call_kwargs`` must not
#: override them behind the workload's back: ``metrics.json`` reports the workload's values).
ENGINE_CALL_KWARGS = {
    "prompt": "workload.prompts", "num_inference_steps": "workload.num_inference_steps",
    "guidance_scale": "workload.guidance_scale", "height": "workload.height", "width": "workload.width",
    "generator": "workload.seed", "output_type": "the engine (it needs PIL images)",
}


def _guidance_problem(key: str, value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_GUIDANCE_SCALE:
        return (f"{key}={value:g} is far beyond any trained guidance (single digits; at most "
                f"{MAX_GUIDANCE_SCALE:g}): the guided prediction would overflow to NaN and every image come out black")
    return None


def class_model_problems(prompts: list[str], height: int | None, width: int | None, class_names: Sequence[str]) -> list[str]:
    """What the tiny class-conditioned model cannot make: a size other than its 16 px, a prompt
    that names none of its classes (by name or index). Its adapter and the early checks share it."""
    sizes = [f"workload.{key}={value}: the tiny model generates {EMBEDDED_SIDE}x{EMBEDDED_SIDE} images only; "
             f"drop workload.{key} (or set {EMBEDDED_SIDE})" for key, value in (("height", height), ("width", width))
             if value not in (None, EMBEDDED_SIDE)]
    if sizes:
        return sizes
    known = {name.lower() for name in class_names} | {str(i) for i in range(len(class_names))}
    unknown = [p for p in prompts if isinstance(p, str) and p.strip().lower() not in known]
    if unknown:
        return [f"unknown prompt '{unknown[0]}' for the tiny model; known prompts: {', '.join(class_names)}"]
    return []


def workload_config_problems(node: DictConfig) -> list[str]:
    """What the ``workload`` node asks for that no run can produce, each a one-line fix; checked
    before anything resolves or loads (a nested prompt list would trip the adapter's checks)."""
    problems = []
    prompts = OmegaConf.to_container(node.prompts, resolve=True) if node.prompts is not None else None
    if prompts is not None:
        bad = next((p for p in prompts if not isinstance(p, str)), None)
        if bad is not None:
            problems.append(f"workload.prompts holds {bad!r}, not a string; give a flat list of prompts, e.g. "
                            "workload.prompts='[a cat,a dog]'")
    seed = node.seed
    count = node.num_prompts if node.num_prompts is not None else (len(prompts) if prompts else 1)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0 or seed + max(count, 1) - 1 > MAX_SEED:
        problems.append(f"workload.seed={seed}: seeds are integers from 0 to 2^64-1 (image i uses seed + i); "
                        "pick one in that range")
    for key in ("height", "width"):
        value = node[key]
        if value is not None and not 1 <= value <= MAX_SIDE:
            problems.append(f"workload.{key}={value}: sizes run from 1 to {MAX_SIDE} pixels; pick a size the model was trained for")
    steps = node.num_inference_steps
    if steps is not None and steps > MAX_STEPS:
        problems.append(f"workload.num_inference_steps={steps}: at most {MAX_STEPS} (schedulers have 1000 training "
                        "timesteps; 20-50 steps is usual)")
    if node.guidance_scale is not None:
        problems.append(_guidance_problem("workload.guidance_scale", node.guidance_scale))
    for key, value in (node.call_kwargs or {}).items():
        if key in ENGINE_CALL_KWARGS:
            source = ENGINE_CALL_KWARGS[key]
            fix = f"set {source}={value}" if source.startswith("workload.") else "drop it"
            problems.append(f"workload.call_kwargs.{key} would override {source} (and metrics.json would not say so); {fix} instead")
        elif str(key).endswith(("guidance_scale", "cfg_scale")):
            problems.append(_guidance_problem(f"workload.call_kwargs.{key}", value))
    return [p for p in problems if p]


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
        if self.num_inference_steps < 1:  # (the upper bounds: workload_config_problems)
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
