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
from tqdm.auto import tqdm

from dit_engine.adapter import Adapter
from dit_engine.errors import DitEngineError, PlanError
from dit_engine.handle import Handle
from dit_engine.outputs import StagedRunFiles, contact_sheet, film_strip, slug
from dit_engine.plan import Plan, compile_plan
from dit_engine.metrics import compare_images, summarize
from dit_engine.metrics.clip import clip_scores
from dit_engine.reference import get_or_create
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


def _workload_problems(workload: Workload) -> list[str]:
    problems = []
    if not workload.prompts:
        problems.append("workload.prompts is empty (or workload.num_prompts=0); give at least one prompt")
    if workload.num_inference_steps < 1:
        problems.append(f"workload.num_inference_steps={workload.num_inference_steps}; use 1 or more")
    if workload.batch_size < 0:
        problems.append(f"workload.batch_size={workload.batch_size}; use 0 (all prompts in one call) or more")
    if workload.repeats < 1:
        problems.append(f"workload.repeats={workload.repeats}; use 1 or more")
    if workload.warmup < 0:
        problems.append(f"workload.warmup={workload.warmup}; use 0 or more")
    return problems


OBJECTIVES = ("latency", "speedup", "psnr")


def _report_problems(report: DictConfig) -> list[str]:
    problems = []
    if report.clip_model is not None and not (Path(report.clip_model).expanduser() / "config.json").is_file():
        problems.append(f"report.clip_model={report.clip_model} is not a local CLIP model directory (no config.json); "
                        "give the folder a CLIPModel was saved to, dit_engine never downloads one")
    if report.reference_timing not in ("fresh", "cached"):
        problems.append(f"report.reference_timing={report.reference_timing} is unknown; use fresh or cached")
    if report.objective not in OBJECTIVES:
        problems.append(f"report.objective={report.objective} is unknown; use one of {', '.join(OBJECTIVES)}")
    elif report.objective in ("speedup", "psnr") and not report.quality:
        problems.append(f"report.objective={report.objective} needs the reference run: use report=quality (or report.quality=true)")
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
    problems.extend(_report_problems(cfg.report))
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

        if cfg.quiet:
            pipe.set_progress_bar_config(disable=True)

        reference = None
        if cfg.report.quality:
            reference = get_or_create(
                cfg.report.reference_dir,
                self._reference_material(prepared, device),
                lambda: self._reference_run(pipe, adapter, workload, device),
            )
            log.info("reference %s (%s)", reference.path, "reused" if reference.reused else "computed now")
            reference_latency = reference.latency_s
            if reference.reused and cfg.report.reference_timing == "fresh":
                reference_latency = self._reference_run(pipe, adapter, workload, device)[1]

        handle = Handle(pipe, prepared.plan).apply()
        try:
            for _ in range(workload.warmup):
                self._generate(pipe, adapter, workload, device)
            handle.reset()
            images, repeat_seconds = self._timed(pipe, adapter, workload, device)
            summary = handle.summary()
            step_times = list(handle.step_state.step_times)
            for transform in handle.transforms:
                for name, data in transform.artifacts().items():
                    files.write_json(name, data)
            if cfg.report.profile:
                self._profile(pipe, adapter, workload, device, files)
        finally:
            handle.remove()

        names = [f"{index:03d}_{slug(prompt)}.png" for index, prompt in enumerate(workload.prompts)]
        image_files = []
        if cfg.report.save_images:
            for name, image in zip(names, images):
                files.save_image(f"images/{name}", image)
                image_files.append(f"images/{name}")
        if cfg.report.contact_sheet:
            labels = [f"{i:03d} {p}" for i, p in enumerate(workload.prompts)]
            files.save_image("contact_sheet.png", contact_sheet(images, labels))

        total = sum(repeat_seconds) / len(repeat_seconds)
        metrics = {
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
        if reference is not None:
            scores = compare_images(names, reference.images, images)
            metrics["quality"] = {
                "reference": {
                    "key": reference.key,
                    "dir": str(reference.path),
                    "latency_s": reference_latency,
                    "cached_latency_s": reference.latency_s,
                    "timing": "this run" if not reference.reused or cfg.report.reference_timing == "fresh" else "cached",
                    "created": reference.created,
                    "reused": reference.reused,
                },
                "speedup_vs_reference": reference_latency / total,
                "aggregate": summarize(scores),
                "per_image": [score.as_dict() for score in scores],
            }
        if cfg.report.clip_model:
            scores = clip_scores(Path(cfg.report.clip_model).expanduser(), images, workload.prompts)
            metrics["clip_score"] = {"model": cfg.report.clip_model, "mean": sum(scores) / len(scores), "per_image": scores}
        metrics["objective"] = objective(cfg.report, metrics)
        return metrics

    def _reference_material(self, prepared: PreparedRun, device: torch.device) -> dict[str, Any]:
        """Everything that determines the reference images (the key of the on-disk cache)."""
        cfg = prepared.cfg
        provider = prepared.adapter.provider
        return {
            "adapter": prepared.adapter.name,
            "adapter_version": provider.version if provider else None,
            "pretrained": cfg.model.pretrained,
            "dtype": cfg.model.dtype,
            "device": device.type,
            "workload": {k: v for k, v in asdict(prepared.workload).items() if k not in ("name", "warmup", "repeats")},
            "torch": torch.__version__,
        }

    def _timed(self, pipe, adapter: Adapter, workload: Workload, device: torch.device) -> tuple[list, list[float]]:
        """Run the workload ``repeats`` times; return the last images and the seconds of each run."""
        seconds = []
        for _ in range(workload.repeats):
            start = time.perf_counter()
            images = self._generate(pipe, adapter, workload, device)
            seconds.append(time.perf_counter() - start)
        return images, seconds

    def _reference_run(self, pipe, adapter: Adapter, workload: Workload, device: torch.device) -> tuple[list, float]:
        """The plain pipeline on the same workload, timed the same way (warm-up, then repeats)."""
        for _ in range(workload.warmup):
            self._generate(pipe, adapter, workload, device)
        images, seconds = self._timed(pipe, adapter, workload, device)
        return images, sum(seconds) / len(seconds)

    def _profile(self, pipe, adapter: Adapter, workload: Workload, device: torch.device, files: StagedRunFiles) -> None:
        """One extra request of the first batch under torch.profiler, as a Chrome trace."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        first = Workload(**{**asdict(workload), "prompts": [workload.prompts[i] for i in workload.batches()[0]]})
        with profile(activities=activities, record_shapes=False) as profiler:
            self._generate(pipe, adapter, first, device)
        profiler.export_chrome_trace(str(files.path("trace.json")))

    def _generate(self, pipe, adapter: Adapter, workload: Workload, device: torch.device) -> list:
        images = []
        batches = workload.batches()
        for batch in tqdm(batches, desc="requests", unit="call", disable=self.cfg.quiet or len(batches) == 1):
            prompts = [workload.prompts[i] for i in batch]
            generators = [torch.Generator(device="cpu").manual_seed(workload.seed + i) for i in batch]
            kwargs = adapter.call_kwargs(prompts, workload.num_inference_steps, workload.guidance_scale, workload.height, workload.width)
            kwargs.update(generator=generators, output_type="pil", **workload.call_kwargs)
            output = pipe(**kwargs)
            if getattr(output, "images", None) is not None:
                images.extend(output.images)
            else:  # video pipelines: one film strip of the frames per video
                images.extend(film_strip(video) for video in output.frames)
        _synchronize(device)
        return images


def objective(report: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value a Hydra sweeper optimises (see ``ReportConfig.objective``)."""
    if report.objective == "latency":
        return metrics["latency"]["total_s"]
    quality = metrics.get("quality")
    if quality is None:
        return None
    psnr = quality["aggregate"]["psnr"]
    if report.objective == "psnr":
        return psnr
    # speedup under a quality floor: infeasible configurations score 0 so an optimiser drops them
    return quality["speedup_vs_reference"] if psnr >= report.psnr_floor else 0.0


def _memory(device: torch.device) -> dict[str, float]:
    # ru_maxrss is in KiB on Linux: the process-wide peak resident set, model and runtime included.
    memory = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        memory["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return memory
