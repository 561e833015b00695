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
from dit_engine.lora import load_lora, lora_problems, use_loras
from dit_engine.outputs import StagedRunFiles
from dit_engine.plan import Plan, compile_plan, counts_steps
from dit_engine.registry import Registry
from dit_engine.run_metrics import report_problems
from dit_engine.transforms.protocols import ChecksWorkload, TracedAdapter
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

    def prepare(self, pipe: Any = None, adapter_name: str | None = None,
                example_call: dict[str, Any] | None = None) -> "Session":
        """Resolve the adapter and workload and compile the plan; raise PlanError listing every
        problem. Nothing is loaded.

        The model facts come from the config files (a session that will :meth:`load` the model),
        or from ``pipe``, a pipeline the caller loaded (:func:`dit_engine.apply`): its adapter is
        found by the pipeline's class (``adapter_name`` forces one) and the block lists are read
        off it. The automatic adapter first traces one call: ``example_call`` (pipeline
        arguments) or, without it, the workload's first prompt. The checks of what the session
        would load (model path and family options, dtype, device, LoRA file, the workload's
        pipeline arguments) run only when it is the session that loads.
        """
        cfg = self.cfg
        problems = config_problems(cfg, self.registry)
        if problems:  # the rest would trip over the same keys
            raise PlanError(problems)
        problems = workload_config_problems(cfg.workload)
        if problems:  # the adapter's checks would trip over them
            raise PlanError(problems)
        if pipe is not None:
            self.adapter = self.registry.adapter_for_pipeline(pipe, adapter_name)
            self.workload = resolve_workload(cfg.workload, self.adapter)
            if isinstance(self.adapter, TracedAdapter):
                self.adapter.trace(pipe, self._trace_call(example_call))
            self.plan = compile_plan(cfg, self.registry, self.adapter, self.adapter.model_info_from_pipeline(pipe))
            return self
        self.adapter = self.registry.adapter(cfg.model.adapter)
        self.workload = resolve_workload(cfg.workload, self.adapter)
        problems = self._load_problems()
        try:
            self.plan = compile_plan(cfg, self.registry, self.adapter, self.adapter.model_info(cfg.model))
        except PlanError as err:
            problems.extend(err.problems)
        else:
            problems.extend(self._workload_plan_problems(workload_is_valid=not problems))
        if problems:
            raise PlanError(problems)
        self.plan = self.plan.with_workload_steps(self.workload.num_inference_steps)
        return self

    def _load_problems(self) -> list[str]:
        """What would stop :meth:`load` or the run: model options, workload, report, LoRA file,
        dtype and device."""
        cfg = self.cfg
        problems = self.adapter.check(cfg.model, self.workload, cfg.dry_run) + self.workload.problems()
        problems.extend(self.adapter.call_kwargs_problems(cfg.model, self.workload.call_kwargs))
        problems.extend(report_problems(cfg.report))
        problems.extend(lora_problems(cfg))
        problem = dtype_problem(cfg.model.dtype)
        if problem:
            problems.append(problem)
        try:
            device = resolve_device(cfg.model.device)
        except DitEngineError as err:
            problems.append(str(err))
        else:
            if cfg.report.clock == "cuda_events" and device.type != "cuda":
                problems.append(f"report.clock=cuda_events times CUDA work and this run is on {device}: "
                                "use report.clock=auto (the process's CPU time here) or report.clock=wall")
        return problems

    def _trace_call(self, example_call: dict[str, Any] | None) -> dict[str, Any]:
        """The pipeline call the automatic adapter traces (two steps are enough to see every block)."""
        if example_call is not None:
            return {**example_call, "num_inference_steps": min(example_call.get("num_inference_steps", 2), 2)}
        return self.adapter.trace_kwargs(self.workload)

    def _workload_plan_problems(self, workload_is_valid: bool) -> list[str]:
        """Plan steps whose own settings must agree with the workload (known only in a run)."""
        problems = []
        if workload_is_valid:  # only then can the pipeline-call arguments be built from it
            w = self.workload
            call_kwargs = {**self.adapter.call_kwargs(w.prompts[:1], w.num_inference_steps, w.guidance_scale, w.height, w.width),
                           **w.call_kwargs}
            for step in self.plan.steps:
                if isinstance(step.transform_class, ChecksWorkload):
                    problems.extend(step.transform_class.workload_problems(step.config, self.adapter, call_kwargs))
        for step in self.plan.steps:
            steps = step.config.num_inference_steps if counts_steps(step.config) else None
            if steps is not None and steps != self.workload.num_inference_steps:
                problems.append(f"{step.group}.num_inference_steps={steps} but the workload runs {self.workload.num_inference_steps} "
                                f"steps; set {step.group}.num_inference_steps={self.workload.num_inference_steps}")
        return problems

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
                use_loras(transformer, [(cfg.lora.name, cfg.lora.scale)])
        if isinstance(adapter, TracedAdapter):
            # model=auto: the block lists are inferred from one traced call, then planned against.
            adapter.trace(pipe, adapter.trace_kwargs(self.workload))
            self.plan = compile_plan(cfg, self.registry, adapter, adapter.model_info_from_pipeline(pipe)).with_workload_steps(
                self.workload.num_inference_steps)
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
            metrics = run_loop.run_experiment(self, run_dir, files)
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
