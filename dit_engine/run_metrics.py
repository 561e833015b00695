"""The metrics writer: everything a run measured, as the ``metrics.json`` of its run directory,
and the value a Hydra sweeper optimises (``report.objective``)."""

from __future__ import annotations

import platform
import resource
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dit_engine.metrics import compare_images, summarize
from dit_engine.metrics.clip import clip_scores
from dit_engine.outputs import writable_dir_problem
from dit_engine.transforms.protocols import TracedAdapter

OBJECTIVES = ("latency", "compute", "speedup", "psnr")
#: objectives that need the reference run (report=quality)
QUALITY_OBJECTIVES = ("compute", "speedup", "psnr")
REFERENCE_TIMINGS = ("fresh", "interleaved", "cached")
CLOCKS = ("auto", "cpu_time", "cuda_events", "wall")


def planned_schedule(summary: dict[str, Any]) -> dict[str, Any]:
    """``{"schedule": ...}``: the planned schedule a cache ran (``cache.schedule``), else nothing."""
    for stats in summary.get("transforms", {}).values():
        if isinstance(stats, dict) and "schedule" in stats:
            return {"schedule": stats["schedule"]}
    return {}


def report_problems(report: DictConfig) -> list[str]:
    """What in the ``report`` group cannot work, each a one-line fix (checked before any run)."""
    problems = []
    if report.clip_model is not None:
        folder = Path(report.clip_model).expanduser()
        if not (folder / "config.json").is_file():
            problems.append(f"report.clip_model={report.clip_model} is not a local CLIP model directory (no config.json); "
                            "give the folder a CLIPModel was saved to, dit_engine never downloads one")
        elif not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            problems.append(f"report.clip_model={report.clip_model} has no weights (*.safetensors or *.bin); "
                            "give the folder CLIPModel.save_pretrained wrote")
    if report.quality:
        problem = writable_dir_problem("report.reference_dir", report.reference_dir)
        if problem:
            problems.append(problem)
    if report.reference_timing not in REFERENCE_TIMINGS:
        problems.append(f"report.reference_timing={report.reference_timing} is unknown; use {', '.join(REFERENCE_TIMINGS)}")
    if report.clock not in CLOCKS:
        problems.append(f"report.clock={report.clock} is unknown; use {', '.join(CLOCKS)}")
    if report.objective not in OBJECTIVES:
        problems.append(f"report.objective={report.objective} is unknown; use one of {', '.join(OBJECTIVES)}")
    elif report.objective in QUALITY_OBJECTIVES and not report.quality:
        problems.append(f"report.objective={report.objective} needs the reference run: use report=quality (or report.quality=true)")
    elif report.objective == "speedup" and report.reference_timing == "cached":
        problems.append("report.objective=speedup times the plain pipeline in this run, interleaved with the accelerated one; "
                        "report.reference_timing=cached would reuse another moment's timing: drop it, or use report.objective=compute")
    return problems


def run_metrics(session, *, run_dir: Path, started: str, device: torch.device, summary: dict[str, Any],
                step_times: list[float], repeat_seconds: list[float], image_files: list[str],
                clock_timing: dict[str, Any]) -> dict[str, Any]:
    """The metrics of one run without quality: latency (wall, and the run's clock beside it:
    ``clock``, ``clock_s``), compute, memory, config, plan, providers."""
    cfg, adapter, plan, workload = session.cfg, session.adapter, session.plan, session.workload
    total = sum(repeat_seconds) / len(repeat_seconds)
    return {
        "run": {
            "started": started,
            "run_dir": str(run_dir),
            "overrides": list(session.overrides),
            "host": platform.node(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),  # the threads= setting, or torch's default
        },
        "model": {
            "adapter": adapter.name,
            "pretrained": cfg.model.pretrained,
            "device": str(device),
            "dtype": cfg.model.dtype,
            "blocks": plan.model_info.blocks,
            **({"inferred": adapter.inferred()} if isinstance(adapter, TracedAdapter) else {}),
        },
        "workload": asdict(workload),
        "latency": {
            "total_s": total,
            "per_repeat_s": repeat_seconds,
            "per_image_s": total / len(workload.prompts),
            "per_step_s": sum(step_times) / len(step_times) if step_times else None,
            "steps_s": step_times,
            "warmup_runs": workload.warmup,
            "clock": clock_timing["clock"],
            "clock_s": clock_timing["clock_s"],
        },
        "compute": summary,
        "cache": {"hit_ratio": summary["hit_ratio"], "steps_cached": summary["steps_cached"], **planned_schedule(summary)},
        "memory": memory(device),
        "images": image_files,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "plan": plan.as_dict(),
        "providers": {
            "adapter": adapter.provider.as_dict() if adapter.provider else None,
            "transforms": {step.name: step.provider.as_dict() for step in plan.steps},
        },
    }


def quality_metrics(reference, reference_timing: dict[str, Any], timing_kind: str, names: list[str], images: list,
                    timing: dict[str, Any], pairs: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """PSNR / SSIM / MAE of every image against the reference, and the speedup vs it.

    ``reference_timing`` and ``timing`` are :func:`~dit_engine.run_loop.mean_timing` dicts (wall
    ``latency_s``, ``clock``, ``clock_s``). The speedup is on the run's clock: with ``pairs``
    (interleaved plain / accelerated timings, see ``run_loop.interleaved_timings``) the median of
    the pairs' ratios, the reference latency the median plain run; otherwise the reference's clock
    seconds over this run's (wall over wall when a cached reference was timed on another clock).
    """
    scores = compare_images(names, reference.images, images)
    clock = timing["clock"]
    if pairs is not None:
        ratios = [plain / fast for plain, fast in zip(pairs["plain_s"], pairs["accelerated_s"])]
        speedup, kind = median(ratios), "interleaved"
        reference_latency, reference_clock_s = median(pairs["plain_wall_s"]), median(pairs["plain_s"])
    else:
        kind = "this run" if not reference.reused or timing_kind != "cached" else "cached"
        reference_latency, reference_clock_s = reference_timing["latency_s"], reference_timing.get("clock_s")
        if reference_timing.get("clock") == clock and reference_clock_s:
            speedup = reference_clock_s / timing["clock_s"]
        else:  # a reference cached before clocks were recorded, or on another clock
            speedup, clock = reference_latency / timing["latency_s"], "wall"
    return {
        "reference": {
            "key": reference.key,
            "dir": str(reference.path),
            "latency_s": reference_latency,
            "clock_s": reference_clock_s,
            "cached_latency_s": reference.latency_s,
            "timing": kind,
            "created": reference.created,
            "reused": reference.reused,
            **({"pairs": {**pairs, "speedups": ratios}} if pairs is not None else {}),
        },
        "speedup_vs_reference": speedup,
        "speedup_clock": clock,
        "aggregate": summarize(scores),
        "per_image": [score.as_dict() for score in scores],
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def clip_metrics(clip_model: str, images: list, prompts: list[str]) -> dict[str, Any]:
    """CLIP score of every image against its prompt, from a local CLIP model."""
    scores = clip_scores(Path(clip_model).expanduser(), images, prompts)
    return {"model": clip_model, "mean": sum(scores) / len(scores), "per_image": scores}


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
    if report.objective == "compute":
        # compute fraction under a quality floor (minimise): deterministic, no clock involved. An
        # infeasible configuration scores above every feasible one (at most 1.0), the more so the
        # further below the floor, so an optimiser is led back to the floor.
        fraction = metrics["compute"]["compute_fraction"]
        return fraction if psnr >= report.psnr_floor else 1.0 + (report.psnr_floor - psnr) / report.psnr_floor
    # speedup under a quality floor: infeasible configurations score 0 so an optimiser drops them
    return quality["speedup_vs_reference"] if psnr >= report.psnr_floor else 0.0


def memory(device: torch.device) -> dict[str, float]:
    """Peak memory: the process's resident set and, on CUDA, the allocator's peak."""
    # ru_maxrss is in KiB on Linux: the process-wide peak resident set, model and runtime included.
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak
