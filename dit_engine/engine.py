"""The CLI engine: compose -> plan -> load via adapter -> apply -> run workload -> report."""

from __future__ import annotations

import datetime
import logging
import platform
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dit_engine.adapter import Adapter
from dit_engine.errors import DitEngineError, PlanError
from dit_engine.handle import Handle
from dit_engine.outputs import StagedRunFiles, contact_sheet, slug
from dit_engine.plan import Plan, compile_plan
from dit_engine.registry import Registry

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Workload:
    """A workload with every model default filled in."""

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


def resolve_workload(node: DictConfig, adapter: Adapter) -> Workload:
    """Fill the workload's null keys from the adapter's defaults."""
    defaults = adapter.workload_defaults()

    def pick(value, default):
        return default if value is None else value

    return Workload(
        name=node.name,
        prompts=list(pick(node.prompts, defaults.prompts)),
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


def _workload_problems(workload: Workload) -> list[str]:
    problems = []
    if not workload.prompts:
        problems.append("workload.prompts is empty; give at least one prompt")
    if workload.num_inference_steps < 1:
        problems.append(f"workload.num_inference_steps={workload.num_inference_steps}; use 1 or more")
    if workload.batch_size < 0:
        problems.append(f"workload.batch_size={workload.batch_size}; use 0 (all prompts in one call) or more")
    if workload.repeats < 1:
        problems.append(f"workload.repeats={workload.repeats}; use 1 or more")
    if workload.warmup < 0:
        problems.append(f"workload.warmup={workload.warmup}; use 0 or more")
    return problems


@dataclass
class PreparedRun:
    """Everything known before any weight is loaded."""

    cfg: DictConfig
    registry: Registry
    adapter: Adapter
    workload: Workload
    plan: Plan


def prepare(cfg: DictConfig) -> PreparedRun:
    """Resolve the adapter and workload and compile the plan; raise PlanError listing every problem."""
    registry = Registry(blocked=cfg.blocked)
    adapter = registry.adapter(cfg.model.adapter)
    workload = resolve_workload(cfg.workload, adapter)
    problems = adapter.check(cfg.model, workload, cfg.dry_run) + _workload_problems(workload)
    if cfg.model.dtype not in DTYPES:
        problems.append(f"model.dtype={cfg.model.dtype} is not supported; use one of {', '.join(DTYPES)}")
    plan = None
    try:
        plan = compile_plan(cfg, registry, adapter, adapter.model_info(cfg.model))
    except PlanError as err:
        problems.extend(err.problems)
    if problems:
        raise PlanError(problems)
    return PreparedRun(cfg, registry, adapter, workload, plan)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DitEngineError(f"model.device={name} but no CUDA device is available; use model.device=cpu or auto")
    return device


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Engine:
    """Runs one composed config end to end and writes the run directory."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.overrides = list(overrides or [])

    def run(self) -> dict[str, Any] | None:
        """Run and return the metrics (None for a dry run)."""
        prepared = prepare(self.cfg)
        files = StagedRunFiles(self.run_dir)
        try:
            explanation = prepared.plan.explain()
            files.write_text("plan.txt", explanation)
            if self.cfg.dry_run:
                print(explanation, end="")
                files.commit()
                return None
            metrics = self._execute(prepared, files)
            files.write_json("metrics.json", metrics)
            files.commit()
        except BaseException:
            files.discard()
            raise
        log.info(
            "done: %.3f s per workload run, %.1f %% of block forwards computed, %d/%d steps cached; outputs in %s",
            metrics["latency"]["total_s"],
            100 * metrics["compute"]["compute_fraction"],
            metrics["compute"]["steps_cached"],
            metrics["compute"]["steps_total"],
            self.run_dir,
        )
        return metrics

    def _execute(self, prepared: PreparedRun, files: StagedRunFiles) -> dict[str, Any]:
        cfg, adapter, workload = prepared.cfg, prepared.adapter, prepared.workload
        device = resolve_device(cfg.model.device)
        dtype = DTYPES[cfg.model.dtype]
        started = datetime.datetime.now().isoformat(timespec="seconds")
        try:
            pipe = adapter.load(cfg.model, device, dtype)
        except DitEngineError:
            raise
        except Exception as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DitEngineError(f"could not load model={adapter.name} (model.pretrained={cfg.model.pretrained}): {first_line}") from err
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        handle = Handle(pipe, prepared.plan).apply()
        try:
            for _ in range(workload.warmup):
                self._generate(pipe, adapter, workload, device)
            handle.reset()
            repeat_seconds = []
            for _ in range(workload.repeats):
                start = time.perf_counter()
                images = self._generate(pipe, adapter, workload, device)
                repeat_seconds.append(time.perf_counter() - start)
            summary = handle.summary()
            step_times = list(handle.step_state.step_times)
        finally:
            handle.remove()

        labels = [f"{i:03d} {p}" for i, p in enumerate(workload.prompts)]
        image_files = []
        if cfg.report.save_images:
            for index, (prompt, image) in enumerate(zip(workload.prompts, images)):
                name = f"images/{index:03d}_{slug(prompt)}.png"
                files.save_image(name, image)
                image_files.append(name)
        if cfg.report.contact_sheet:
            files.save_image("contact_sheet.png", contact_sheet(images, labels))

        total = sum(repeat_seconds) / len(repeat_seconds)
        return {
            "run": {
                "started": started,
                "run_dir": str(self.run_dir),
                "overrides": self.overrides,
                "host": platform.node(),
                "torch": torch.__version__,
            },
            "model": {
                "adapter": adapter.name,
                "pretrained": cfg.model.pretrained,
                "device": str(device),
                "dtype": cfg.model.dtype,
                "blocks": prepared.plan.model_info.blocks,
            },
            "workload": asdict(workload),
            "latency": {
                "total_s": total,
                "per_repeat_s": repeat_seconds,
                "per_image_s": total / len(workload.prompts),
                "per_step_s": sum(step_times) / len(step_times) if step_times else None,
                "steps_s": step_times,
                "warmup_runs": workload.warmup,
            },
            "compute": summary,
            "cache": {"hit_ratio": summary["hit_ratio"], "steps_cached": summary["steps_cached"]},
            "memory": _memory(device),
            "images": image_files,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "plan": prepared.plan.as_dict(),
            "providers": {
                "adapter": adapter.provider.as_dict() if adapter.provider else None,
                "transforms": {step.name: step.provider.as_dict() for step in prepared.plan.steps},
            },
        }

    def _generate(self, pipe, adapter: Adapter, workload: Workload, device: torch.device) -> list:
        images = []
        for batch in workload.batches():
            prompts = [workload.prompts[i] for i in batch]
            generators = [torch.Generator(device="cpu").manual_seed(workload.seed + i) for i in batch]
            kwargs = adapter.call_kwargs(prompts, workload.num_inference_steps, workload.guidance_scale, workload.height, workload.width)
            kwargs.update(generator=generators, output_type="pil", **workload.call_kwargs)
            images.extend(pipe(**kwargs).images)
        _synchronize(device)
        return images


def _memory(device: torch.device) -> dict[str, float]:
    # ru_maxrss is in KiB on Linux: the process-wide peak resident set, model and runtime included.
    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        memory["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return memory
