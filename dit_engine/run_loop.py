"""The run loop: call the pipeline over a workload, timed the same way for every run.

The reference (plain pipeline) and the accelerated run go through the same functions, so their
latencies are comparable: warm-up runs first, then ``repeats`` timed runs of the whole workload.
Every timed run is read on two clocks: the wall (the latency a user waits) and the run's clock
(``report.clock``: by default the process's own CPU time on a CPU, CUDA events on a GPU; see
``dit_engine.metrics.clock``), on which speedups are computed because it holds on a shared machine.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dit_engine.adapter import Adapter
from dit_engine.devices import resolve_device
from dit_engine.finite import FiniteWatch
from dit_engine.metrics.quality import compare_images, summarize
from dit_engine.metrics.clock import Clock, Reading, clock_for
from dit_engine.outputs import StagedRunFiles, contact_sheet, film_strip, slug
from dit_engine.reference import get_or_create
from dit_engine.report.strips import compute_strip
from dit_engine.threads import warn_if_oversubscribed
from dit_engine.run_metrics import clip_metrics, objective, quality_metrics, run_metrics
from dit_engine.transforms.protocols import HasExactVariant, ReportsRunMetrics, WritesArtifacts
from dit_engine.workload import Workload

log = logging.getLogger(__name__)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a timer read afterwards covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generate(pipe, adapter: Adapter, workload: Workload, device: torch.device, quiet: bool = False) -> list:
    """One pass over the workload's batches; returns one PIL image per prompt (a film strip of the
    frames for video pipelines)."""
    images = []
    batches = workload.batches()
    for batch in tqdm(batches, desc="requests", unit="call", disable=quiet or len(batches) == 1):
        images.extend(call_pipeline(pipe, adapter, workload, [workload.prompts[i] for i in batch],
                                    [workload.seed + i for i in batch]))
    synchronize(device)
    return images


def call_pipeline(pipe, adapter: Adapter, workload: Workload, prompts: list[str], seeds: list[int], frames: bool = False) -> list:
    """One pipeline call: ``prompts`` with one CPU generator per image seeded from ``seeds``, the
    workload's steps, guidance, size and extra arguments; one PIL image per prompt (a film strip
    of the frames for video pipelines; with ``frames`` the list of frames). The server runs its
    batches through it too, so a served image equals the CLI's for the same prompt and seed.

    Raises NonFiniteOutputError (naming the likely cause) when the call produced NaN or Inf."""
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    kwargs = adapter.call_kwargs(prompts, workload.num_inference_steps, workload.guidance_scale, workload.height, workload.width)
    kwargs.update(generator=generators, output_type="pil", **workload.call_kwargs)
    # NaN / Inf would come out as flat black images: such a call fails (NonFiniteOutputError)
    with FiniteWatch(pipe, adapter.transformers(pipe), workload.guidance_scale) as watch:
        output = pipe(**kwargs)
    watch.check()
    if getattr(output, "images", None) is not None:
        return list(output.images)
    if frames:
        return [list(video) for video in output.frames]
    return [film_strip(video) for video in output.frames]  # video pipelines: one strip per video


def timed(pipe, adapter: Adapter, workload: Workload, device: torch.device, clock: Clock,
          quiet: bool = False) -> tuple[list, list[Reading]]:
    """Run the workload ``repeats`` times; return the last images and the reading of each run."""
    readings = []
    images: list = []
    for _ in range(workload.repeats):
        outcome: list = []
        readings.append(clock.time(lambda: outcome.append(generate(pipe, adapter, workload, device, quiet))))
        images = outcome[0]
    return images, readings


def mean_timing(readings: list[Reading], clock: Clock) -> dict[str, Any]:
    """The mean wall seconds and clock seconds of ``readings``, with the clock's name."""
    return {"latency_s": sum(r.wall_s for r in readings) / len(readings), "clock": clock.name,
            "clock_s": sum(r.seconds for r in readings) / len(readings)}


def warm_up(pipe, adapter: Adapter, workload: Workload, device: torch.device, quiet: bool = False) -> None:
    """The untimed runs that take first-call overheads out of the numbers."""
    for _ in range(workload.warmup):
        generate(pipe, adapter, workload, device, quiet)


def reference_run(pipe, adapter: Adapter, workload: Workload, device: torch.device, clock: Clock,
                  quiet: bool = False) -> tuple[list, dict[str, Any]]:
    """The plain pipeline on the same workload, timed the same way (warm-up, then repeats): its
    images and :func:`mean_timing`."""
    warm_up(pipe, adapter, workload, device, quiet)
    images, readings = timed(pipe, adapter, workload, device, clock, quiet)
    return images, mean_timing(readings, clock)


def interleaved_timings(pipe, adapter: Adapter, workload: Workload, device: torch.device, handle, pairs: int,
                        clock: Clock, warm_plain: bool = True, quiet: bool = False) -> dict[str, list[float]]:
    """``pairs`` plain and accelerated runs of the workload in turn (plain first in even pairs,
    accelerated first in odd ones), the plan removed from and applied again to ``pipe`` through
    ``handle`` between them: machine load then weighs on both sides of a pair alike. The handle is
    applied again at the end. ``warm_plain`` first runs the workload's warm-up on the plain pipeline.
    Seconds on ``clock`` (``plain_s``, ``accelerated_s``), wall beside (``plain_wall_s``, ``accelerated_wall_s``)."""
    seconds: dict[str, list[float]] = {"plain_s": [], "accelerated_s": [], "plain_wall_s": [], "accelerated_wall_s": []}

    def run(kind: str) -> None:
        if kind == "plain_s" and handle.applied:
            handle.remove()
        elif kind == "accelerated_s" and not handle.applied:
            handle.apply()
        reading = clock.time(lambda: generate(pipe, adapter, workload, device, quiet))
        seconds[kind].append(reading.seconds)
        seconds[kind.replace("_s", "_wall_s")].append(reading.wall_s)

    if warm_plain:
        handle.remove()
        warm_up(pipe, adapter, workload, device, quiet)
    for index in range(pairs):
        for kind in (("plain_s", "accelerated_s") if index % 2 == 0 else ("accelerated_s", "plain_s")):
            run(kind)
    if not handle.applied:
        handle.apply()
    return seconds


#: transformer calls let by before the profiler records one (the first calls carry one-off costs)
PROFILE_SKIPPED_CALLS = 2


def profile_first_batch(pipe, adapter: Adapter, workload: Workload, device: torch.device, trace: Path,
                        quiet: bool = False) -> dict:
    """One extra request of the first batch under torch.profiler, written as a Chrome trace.

    Only one denoising step is recorded: the third transformer call and what runs until the next
    (a whole request of 28 steps is about 30 MB of JSON; one step shows the same kernels). A
    request with fewer transformer calls is recorded whole. Returns what was recorded, for
    ``metrics.json``: the trace's size, the calls recorded, shapes off.
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    first = Workload(**{**asdict(workload), "prompts": [workload.prompts[i] for i in workload.batches()[0]]})
    transformers = list(adapter.transformers(pipe).values())
    exported: list[bool] = []

    def ready(profiler) -> None:
        profiler.export_chrome_trace(str(trace))
        exported.append(True)

    steps = schedule(wait=PROFILE_SKIPPED_CALLS, warmup=1, active=1, repeat=1)
    with profile(activities=activities, record_shapes=False, schedule=steps, on_trace_ready=ready) as profiler:
        # a step boundary before every transformer call: the recorded window is one call and the
        # scheduler step after it
        hooks = [t.register_forward_pre_hook(lambda *_: profiler.step()) for t in transformers]
        try:
            generate(pipe, adapter, first, device, quiet)
        finally:
            for hook in hooks:
                hook.remove()
    recorded = f"transformer call {PROFILE_SKIPPED_CALLS + 1} of one request ({len(first.prompts)} prompt(s))"
    if not exported:  # too few transformer calls to reach the recorded one: the whole request
        with profile(activities=activities, record_shapes=False) as whole:
            generate(pipe, adapter, first, device, quiet)
        whole.export_chrome_trace(str(trace))
        recorded = f"one whole request ({len(first.prompts)} prompt(s))"
    return {"trace": str(trace), "size_mb": round(Path(trace).stat().st_size / 2**20, 3), "recorded": recorded,
            "record_shapes": False}


def run_experiment(session, run_dir: Path, files: StagedRunFiles) -> dict[str, Any]:
    """The timed experiment of one run: load and apply the session's plan, warm up, time the
    workload's repeats, write images and the transforms' artifacts into ``files``, and measure
    against the reference (``report.quality``); returns the run's metrics."""
    cfg, adapter, workload, quiet = session.cfg, session.adapter, session.workload, session.quiet
    device = resolve_device(cfg.model.device)
    clock = clock_for(device, cfg.report.clock)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    if device.type == "cpu" and session.plan.dims.world == 1:  # a local launch said it for all its ranks
        warn_if_oversubscribed(torch.get_num_threads())
    started = datetime.datetime.now().isoformat(timespec="seconds")
    pipe = session.load()
    files.write_text("plan.txt", session.plan.explain())  # model=auto: now with what the trace inferred
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    reference = None
    if cfg.report.quality:
        reference = get_or_create(
            cfg.report.reference_dir,
            session.reference_material(device),
            lambda: reference_run(pipe, adapter, workload, device, clock, quiet),
        )
        log.info("reference %s (%s)", reference.path, "reused" if reference.reused else "computed now")
        reference_timing = reference.timing
        interleave = _interleaves(session)
        if reference.reused and cfg.report.reference_timing != "cached" and not interleave:
            reference_timing = reference_run(pipe, adapter, workload, device, clock, quiet)[1]

    handle = session.apply(pipe)
    pairs = None
    artifacts = []
    profile = None
    try:
        warm_up(pipe, adapter, workload, device, quiet)
        handle.reset()
        images, readings = timed(pipe, adapter, workload, device, clock, quiet)
        repeat_seconds = [reading.wall_s for reading in readings]
        summary = handle.summary()
        step_times = list(handle.step_state.step_times)
        # the transforms' own metrics.json sections, of the timed runs as the summary (parallel:
        # gathered from every rank, a collective every rank reaches here)
        latency = {"total_s": sum(repeat_seconds) / len(repeat_seconds)}
        sections = {t.metrics_key: t.run_metrics(latency) for t in handle.transforms if isinstance(t, ReportsRunMetrics)}
        for transform in (t for t in handle.transforms if isinstance(t, HasExactVariant) and t.is_lossy()):
            sections.setdefault(transform.metrics_key, {})["psnr_vs_exact"] = psnr_against_exact(
                transform, images, lambda: generate(pipe, adapter, workload, device, quiet))
        for transform in (t for t in handle.transforms if isinstance(t, WritesArtifacts)):
            for name, data in transform.artifacts().items():
                files.write_json(name, data)
                artifacts.append(name)
        if cfg.report.profile:
            profile = profile_first_batch(pipe, adapter, workload, device, files.path("trace.json"), quiet)
            profile["trace"] = str(run_dir / "trace.json")
        if reference is not None and interleave:
            # plain and accelerated runs in turn (the handle is removed and applied again), so
            # the load of the moment weighs on both sides of every pair alike
            pairs = interleaved_timings(pipe, adapter, workload, device, handle, max(workload.repeats, 3), clock,
                                        warm_plain=reference.reused, quiet=quiet)
    finally:
        if not session.plan.irreversible_steps():  # a quantized or compiled pipeline is dropped instead
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

    timing = mean_timing(readings, clock)
    metrics = run_metrics(session, run_dir=run_dir, started=started, device=device, summary=summary,
                          step_times=step_times, repeat_seconds=repeat_seconds, image_files=image_files,
                          clock_timing=timing)
    metrics.update(sections)
    if artifacts:
        metrics["artifacts"] = artifacts
    if profile is not None:
        metrics["profile"] = profile
    if reference is not None:
        metrics["quality"] = quality_metrics(reference, reference_timing, cfg.report.reference_timing, names, images,
                                             timing, pairs=pairs)
    if cfg.report.clip_model:
        metrics["clip_score"] = clip_metrics(cfg.report.clip_model, images, workload.prompts)
    metrics["objective"] = objective(cfg.report, metrics)
    strip = compute_strip(metrics)  # which steps each cache computed, cached or forecast
    if strip is not None:
        files.save_image("compute_strip.png", strip)
    return metrics

def psnr_against_exact(transform, images: list, generate_images) -> dict[str, Any]:
    """The run's images against the workload run once more inside ``transform.exact()``: the PSNR
    its lossy variant costs on its own (:class:`~dit_engine.transforms.protocols.HasExactVariant`)."""
    with transform.exact():
        exact_images = generate_images()
    names = [f"{index:03d}" for index in range(len(images))]
    aggregate = summarize(compare_images(names, exact_images, images))
    return {"psnr": aggregate["psnr"], "psnr_min": aggregate["psnr_min"], "identical": aggregate["identical"],
            "images": aggregate["images"]}


def _interleaves(session) -> bool:
    """Whether the speedup is timed from interleaved plain / accelerated pairs: asked for
    (``report.reference_timing=interleaved``) or needed (``report.objective=speedup``), and
    possible (every plan step can be removed and applied again)."""
    report = session.cfg.report
    wanted = report.reference_timing == "interleaved" or report.objective == "speedup"
    if wanted and session.plan.irreversible_steps():
        names = ", ".join(step.name for step in session.plan.irreversible_steps())
        log.warning("speedup timed plain-then-accelerated, not interleaved: %s cannot be removed and applied again", names)
        return False
    return wanted
