"""A session: one configuration's whole life, compose -> plan -> load -> apply -> run.

The CLI (``python -m dit_engine``), the Python API (:func:`dit_engine.apply`, which brings its own
pipeline and skips ``load``) and a server all go through this one object, so a configuration is
checked, planned and applied the same way everywhere::

    session = Session.from_overrides(["cache=dbcache"]).prepare()   # compose + plan, no weights
    pipe = session.load()                                           # adapter + load-time steps
    handle = session.apply(pipe)                                    # hooks on the live pipeline
    metrics = session.run(run_dir)                                  # load, apply, workload, files

Everything a user can get wrong is found by ``prepare`` (before any weight is loaded) and raised
as a :class:`~dit_engine.errors.DitEngineError` that lists every problem.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from dit_engine import run_loop
from dit_engine.adapter import Adapter
from dit_engine.config import compose_config
from dit_engine.config.validate import config_problems
from dit_engine.console import FINAL_LINE
from dit_engine.devices import DTYPES, dtype_problem, resolve_device
from dit_engine.errors import DitEngineError, PlanError
from dit_engine.handle import Handle
from dit_engine.lora import load_lora, lora_problems, use_lora
from dit_engine.outputs import StagedRunFiles, contact_sheet, slug
from dit_engine.plan import Plan, compile_plan
from dit_engine.reference import get_or_create
from dit_engine.registry import Registry
from dit_engine.run_metrics import clip_metrics, objective, quality_metrics, report_problems, run_metrics
from dit_engine.workload import Workload, resolve_workload, workload_config_problems

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _loading_bar(shown: bool) -> Iterator[None]:
    """diffusers' "Loading pipeline components" bar only at a terminal: in logs and captured
    output it is noise (and a failed load would leave half a bar before the one-line error)."""
    from diffusers.utils import logging as diffusers_logging

    was_shown = diffusers_logging.is_progress_bar_enabled()
    if not shown:
        diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_shown:
            diffusers_logging.enable_progress_bar()


class Session:
    """One composed configuration and what it becomes: adapter, workload, plan, pipeline, run.

    Args:
        cfg: the composed run config (Hydra's, or :meth:`from_overrides`).
        overrides: the override strings it was composed from (recorded in ``metrics.json``).
    """

    def __init__(self, cfg: DictConfig, overrides: Sequence[str] = ()):
        self.cfg = cfg
        self.overrides = list(overrides)
        self.registry = Registry(blocked=cfg.blocked)
        self.adapter: Adapter | None = None
        self.workload: Workload | None = None
        self.plan: Plan | None = None

    @classmethod
    def from_overrides(cls, overrides: Sequence[str] = ()) -> "Session":
        """Compose ``conf/config.yaml`` with ``overrides`` (the CLI's syntax); ConfigError on bad input."""
        return cls(compose_config(overrides), overrides)

    @property
    def quiet(self) -> bool:
        return bool(self.cfg.quiet)

    # -- plan ----------------------------------------------------------------------------

    def prepare(self) -> "Session":
        """Resolve the adapter and workload and compile the plan from config files only (no
        weights); raise PlanError listing every problem."""
        cfg = self.cfg
        problems = config_problems(cfg, self.registry)
        if problems:  # the rest would trip over the same keys
            raise PlanError(problems)
        problems = workload_config_problems(cfg.workload)
        if problems:  # the adapter's checks would trip over them
            raise PlanError(problems)
        self.adapter = self.registry.adapter(cfg.model.adapter)
        self.workload = resolve_workload(cfg.workload, self.adapter)
        problems = self.adapter.check(cfg.model, self.workload, cfg.dry_run) + self.workload.problems()
        problems.extend(self.adapter.call_kwargs_problems(cfg.model, self.workload.call_kwargs))
        problems.extend(report_problems(cfg.report))
        problems.extend(lora_problems(cfg))
        problem = dtype_problem(cfg.model.dtype)
        if problem:
            problems.append(problem)
        try:
            resolve_device(cfg.model.device)
        except DitEngineError as err:
            problems.append(str(err))
        try:
            self.plan = compile_plan(cfg, self.registry, self.adapter, self.adapter.model_info(cfg.model))
        except PlanError as err:
            problems.extend(err.problems)
        else:
            problems.extend(self._workload_plan_problems(workload_is_valid=not problems))
        if problems:
            raise PlanError(problems)
        return self

    def _workload_plan_problems(self, workload_is_valid: bool) -> list[str]:
        """Plan steps whose own settings must agree with the workload (known only in a run)."""
        problems = []
        if workload_is_valid:  # only then can the pipeline-call arguments be built from it
            w = self.workload
            call_kwargs = {**self.adapter.call_kwargs(w.prompts[:1], w.num_inference_steps, w.guidance_scale, w.height, w.width),
                           **w.call_kwargs}
            for step in self.plan.steps:
                problems.extend(step.transform_class.workload_problems(step.config, self.adapter, call_kwargs))
        for step in self.plan.steps:
            if not hasattr(step.config, "num_inference_steps"):
                continue
            steps = step.config.num_inference_steps
            if steps is None:  # "the workload's": known now
                step.config.num_inference_steps = self.workload.num_inference_steps
            elif steps != self.workload.num_inference_steps:
                problems.append(f"{step.group}.num_inference_steps={steps} but the workload runs {self.workload.num_inference_steps} "
                                f"steps; set {step.group}.num_inference_steps={self.workload.num_inference_steps}")
        return problems

    def prepare_for(self, pipe: Any, adapter_name: str | None = None, example_call: dict[str, Any] | None = None) -> "Session":
        """Plan for a pipeline the caller loaded (the Python API): the adapter is found by the
        pipeline's class (``adapter_name`` forces one) and the model facts are read off it.

        The automatic adapter first traces one call: ``example_call`` (pipeline arguments) or,
        without it, the workload's first prompt.
        """
        problems = config_problems(self.cfg, self.registry) or workload_config_problems(self.cfg.workload)
        if problems:
            raise PlanError(problems)
        self.adapter = self.registry.adapter_for_pipeline(pipe, adapter_name)
        if getattr(self.adapter, "needs_trace", False):
            if example_call is not None:
                call = {**example_call, "num_inference_steps": min(example_call.get("num_inference_steps", 2), 2)}
            else:
                call = self.adapter.trace_kwargs(resolve_workload(self.cfg.workload, self.adapter))
            self.adapter.trace(pipe, call)
        self.plan = compile_plan(self.cfg, self.registry, self.adapter, self.adapter.model_info_from_pipeline(pipe))
        return self

    # -- load and apply ------------------------------------------------------------------

    def load(self) -> Any:
        """Load the pipeline through the adapter, with the plan's load-time arguments, and place
        it on ``model.device`` (unless a plan step places the modules itself)."""
        cfg, adapter = self.cfg, self.adapter
        device = resolve_device(cfg.model.device)
        try:
            with _loading_bar(shown=not self.quiet and sys.stderr.isatty()):
                pipe = adapter.load(cfg.model, DTYPES[cfg.model.dtype], self.plan.load_kwargs())
        except DitEngineError:
            raise
        except Exception as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DitEngineError(f"could not load model={adapter.name} (model.pretrained={cfg.model.pretrained}): {first_line}") from err
        if not self.plan.places_pipeline:
            pipe = pipe.to(device)
        if self.quiet:
            pipe.set_progress_bar_config(disable=True)
        if cfg.lora.path is not None:
            for transformer in adapter.transformers(pipe).values():
                load_lora(transformer, cfg.lora.path, cfg.lora.name)
                use_lora(transformer, cfg.lora.name, cfg.lora.scale)
        if getattr(adapter, "needs_trace", False):
            # model=auto: the block lists are inferred from one traced call, then planned against.
            adapter.trace(pipe, adapter.trace_kwargs(self.workload))
            self.plan = compile_plan(cfg, self.registry, adapter, adapter.model_info_from_pipeline(pipe))
        return pipe

    def apply(self, pipe: Any) -> Handle:
        """Apply the plan to ``pipe``; the handle reports, resets and removes it."""
        return Handle(pipe, self.plan).apply()

    # -- run -----------------------------------------------------------------------------

    def run(self, run_dir: str | Path, timing_note: str | None = None) -> dict[str, Any] | None:
        """Run the workload and write the run directory; return the metrics (None for a dry run).

        Files are staged and moved into ``run_dir`` only when the run succeeded, so a failed run
        leaves nothing that looks complete. ``timing_note`` says why the latencies cannot be
        trusted (other work shared the cores); it is recorded as ``latency.untrusted``.
        """
        if self.plan is None:
            self.prepare()
        run_dir = Path(run_dir)
        files = StagedRunFiles(run_dir)
        try:
            explanation = self.plan.explain()
            files.write_text("plan.txt", explanation)
            if self.cfg.dry_run:
                print(explanation, end="")
                files.commit()
                return None
            metrics = self._execute(run_dir, files)
            if timing_note:
                metrics["latency"]["untrusted"] = timing_note
                log.warning("timings not comparable: %s; run the sweep with hydra.launcher.n_jobs=1 to measure speed", timing_note)
            files.write_json("metrics.json", metrics)
            files.commit()
        except BaseException:
            files.discard()
            raise
        artifacts = "".join(f"; {name}: {run_dir / name}" for name in metrics.get("artifacts", []))
        # the final line shows even with quiet=true (the CLI's console filter lets FINAL_LINE through)
        log.info(
            "done: %.3f s per workload run, %.1f %% of block forwards computed, %d/%d steps cached; outputs in %s%s",
            metrics["latency"]["total_s"],
            100 * metrics["compute"]["compute_fraction"],
            metrics["compute"]["steps_cached"],
            metrics["compute"]["steps_total"],
            run_dir,
            artifacts,
            extra={FINAL_LINE: True},
        )
        return metrics

    def _execute(self, run_dir: Path, files: StagedRunFiles) -> dict[str, Any]:
        cfg, adapter, workload, quiet = self.cfg, self.adapter, self.workload, self.quiet
        device = resolve_device(cfg.model.device)
        started = datetime.datetime.now().isoformat(timespec="seconds")
        pipe = self.load()
        files.write_text("plan.txt", self.plan.explain())  # model=auto: now with what the trace inferred
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        reference = None
        if cfg.report.quality:
            reference = get_or_create(
                cfg.report.reference_dir,
                self.reference_material(device),
                lambda: run_loop.reference_run(pipe, adapter, workload, device, quiet),
            )
            log.info("reference %s (%s)", reference.path, "reused" if reference.reused else "computed now")
            reference_latency = reference.latency_s
            interleave = self._interleaves()
            if reference.reused and cfg.report.reference_timing != "cached" and not interleave:
                reference_latency = run_loop.reference_run(pipe, adapter, workload, device, quiet)[1]

        handle = self.apply(pipe)
        pairs = None
        artifacts = []
        profile = None
        try:
            run_loop.warm_up(pipe, adapter, workload, device, quiet)
            handle.reset()
            images, repeat_seconds = run_loop.timed(pipe, adapter, workload, device, quiet)
            summary = handle.summary()
            step_times = list(handle.step_state.step_times)
            for transform in handle.transforms:
                for name, data in transform.artifacts().items():
                    files.write_json(name, data)
                    artifacts.append(name)
            if cfg.report.profile:
                profile = run_loop.profile_first_batch(pipe, adapter, workload, device, files.path("trace.json"), quiet)
                profile["trace"] = str(run_dir / "trace.json")
            if reference is not None and interleave:
                # plain and accelerated runs in turn (the handle is removed and applied again), so
                # the load of the moment weighs on both sides of every pair alike
                pairs = run_loop.interleaved_timings(pipe, adapter, workload, device, handle, max(workload.repeats, 3),
                                                     warm_plain=reference.reused, quiet=quiet)
        finally:
            if not self.plan.irreversible_steps():  # a quantized or compiled pipeline is dropped instead
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

        metrics = run_metrics(self, run_dir=run_dir, started=started, device=device, summary=summary,
                              step_times=step_times, repeat_seconds=repeat_seconds, image_files=image_files)
        parallel = summary["transforms"].get("shard.torch_distributed")
        if parallel is not None:
            from dit_engine.parallel.report import per_rank_metrics

            metrics["parallel"] = per_rank_metrics(parallel, metrics["latency"])
        if artifacts:
            metrics["artifacts"] = artifacts
        if profile is not None:
            metrics["profile"] = profile
        if reference is not None:
            metrics["quality"] = quality_metrics(reference, reference_latency, cfg.report.reference_timing, names, images,
                                                 metrics["latency"]["total_s"], pairs=pairs)
        if cfg.report.clip_model:
            metrics["clip_score"] = clip_metrics(cfg.report.clip_model, images, workload.prompts)
        metrics["objective"] = objective(cfg.report, metrics)
        return metrics

    def _interleaves(self) -> bool:
        """Whether the speedup is timed from interleaved plain / accelerated pairs: asked for
        (``report.reference_timing=interleaved``) or needed (``report.objective=speedup``), and
        possible (every plan step can be removed and applied again)."""
        report = self.cfg.report
        wanted = report.reference_timing == "interleaved" or report.objective == "speedup"
        if wanted and self.plan.irreversible_steps():
            names = ", ".join(step.name for step in self.plan.irreversible_steps())
            log.warning("speedup timed plain-then-accelerated, not interleaved: %s cannot be removed and applied again", names)
            return False
        return wanted

    def reference_material(self, device: torch.device) -> dict[str, Any]:
        """Everything that determines the reference images (the key of the on-disk cache)."""
        cfg, provider = self.cfg, self.adapter.provider
        return {
            "adapter": self.adapter.name,
            "adapter_version": provider.version if provider else None,
            "pretrained": cfg.model.pretrained,
            **({"lora": [cfg.lora.path, cfg.lora.scale]} if cfg.lora.path is not None else {}),
            "dtype": cfg.model.dtype,
            "device": device.type,
            "workload": {k: v for k, v in asdict(self.workload).items() if k not in ("name", "warmup", "repeats")},
            "torch": torch.__version__,
        }
