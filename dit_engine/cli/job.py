"""The Hydra job: one run of a :class:`~dit_engine.session.Session` into Hydra's output directory,
every failure one line (2 for bad input, 1 for an internal error)."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dit_engine.atomic import atomic_write_text
from dit_engine.cli.logs import LOG_FILE_ONLY, console_without_tracebacks, quiet_console
from dit_engine.cli.overrides import user_overrides
from dit_engine.cli.run_dir import NewRunDir
from dit_engine.console import fail, one_line
from dit_engine.errors import DitEngineError, NonFiniteOutputError

if TYPE_CHECKING:
    from dit_engine.session import Session

#: A failed sweep cell's record (the sweep report marks the cell FAILED with its reason).
FAILED_FILE = "failed.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Planned:
    """What :class:`~dit_engine.cli.plan_check.PlanCheckCallback` hands the job it checked: the
    planned session (reused, so a run is planned once) and, for a single run, the folders its run
    directory creates (removed again if the run is refused for bad input)."""

    session: Session
    new_run_dir: NewRunDir | None = None


class Job:
    """The task function Hydra runs for every job (a single run, or each sweep cell).

    A callable object rather than a function: Hydra hands the task function to the callbacks'
    ``on_job_start``, where the plan check gives it what it planned (:attr:`planned`).

    Args:
        wants_traceback: the user set ``HYDRA_FULL_ERROR=1``: an internal error is raised (Hydra
            prints its traceback) after its one line.
    """

    def __init__(self, wants_traceback: bool) -> None:
        self.wants_traceback = wants_traceback
        #: Set by the plan check just before this job runs; None when it planned nothing for it.
        self.planned: Planned | None = None

    def __call__(self, cfg: DictConfig) -> float | None:
        """Run the job; its objective (for a sweeper), None when it has none or a sweep cell failed.

        A single run that fails exits (2 for bad input, 1 for an internal error, one line each,
        the traceback in the run's log). A sweep cell that fails writes ``failed.json`` (the
        reason, one line) into its directory and the sweep goes on; its report marks the cell
        FAILED.
        """
        # Imported here: they import torch, which --help and shell completion do without.
        from dit_engine.launch.run import run_on_ranks
        from dit_engine.parallel.mesh import bind_local_device, launched_world
        from dit_engine.session import Session

        planned, self.planned = self.planned, None
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.runtime.choices.get("hydra/job_logging") == "disabled":
            cfg.quiet = True  # logging switched off: progress bars go too
        if cfg.quiet:
            quiet_console()
        console_without_tracebacks()
        overrides = user_overrides(hydra_cfg.overrides.task)
        output_dir = Path(hydra_cfg.runtime.output_dir)
        try:
            session = Session(cfg, overrides)
            if planned is not None:  # planned by PlanCheckCallback: reuse it, with this job's config
                session.adapter, session.workload, session.plan = planned.session.adapter, planned.session.workload, planned.session.plan
            else:
                session.prepare()
            world = session.plan.world_size
            if world > 1 and launched_world() is None and not cfg.dry_run:
                # Not under torchrun: start the ranks here (dit_engine.launch); rank 0 writes.
                metrics = run_on_ranks(session, output_dir, world)
            else:
                bind_local_device(cfg.model.device)
                metrics = session.run(output_dir, timing_note=_shared_cores_note(hydra_cfg))
        except Exception as err:  # noqa: BLE001 - every failure becomes one line (and a log entry)
            if _report_failure(err, hydra_cfg, output_dir, planned):  # a sweep cell: the sweep goes on
                return None
            if self.wants_traceback:
                raise
            sys.exit(1)
        return None if metrics is None else metrics["objective"]


def _report_failure(err: Exception, hydra_cfg: DictConfig, output_dir: Path, planned: Planned | None) -> bool:
    """Report a failed job in one line. A sweep cell records it in ``failed.json`` (True: the
    sweep goes on); a run refused for bad input removes what it created and exits 2; an internal
    error is printed with where its traceback went (False: the caller exits 1)."""
    bad_input = isinstance(err, DitEngineError)
    if bad_input or isinstance(err, NonFiniteOutputError):  # the message names the cause and the fix
        reason = one_line(err)
    else:
        reason = f"internal error: {type(err).__name__}: {one_line(err)}"
    if not bad_input:  # the traceback goes to the run's log; the console gets the one line below
        log.error(reason, exc_info=True, extra={LOG_FILE_ONLY: True})
    if hydra_cfg.mode == RunMode.MULTIRUN:
        atomic_write_text(output_dir / FAILED_FILE, json.dumps({"reason": reason, "bad_input": bad_input}) + "\n")
        print(f"dit_engine: sweep cell {hydra_cfg.job.num} failed, the sweep goes on: {reason}", file=sys.stderr)
        return True
    if bad_input:
        if planned is not None and planned.new_run_dir is not None:
            planned.new_run_dir.remove()
        fail(err)
    log_file = output_dir / f"{hydra_cfg.job.name}.log"
    if isinstance(err, NonFiniteOutputError):
        print(f"dit_engine: error: {reason}; nothing was written as a result (log: {log_file})", file=sys.stderr)
    else:
        print(f"dit_engine: {reason}; the traceback is in {log_file} (HYDRA_FULL_ERROR=1 prints it)", file=sys.stderr)
    return False


def _shared_cores_note(hydra_cfg: DictConfig) -> str | None:
    """Why this job's timings cannot be trusted, when sweep cells run at once (joblib n_jobs != 1)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs")
    if n_jobs is None or n_jobs == 1:
        return None
    return f"sweep cells ran {n_jobs if n_jobs > 0 else 'all'} at a time on {os.cpu_count()} cores (hydra.launcher.n_jobs={n_jobs})"
