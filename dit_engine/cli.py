"""``python -m dit_engine [overrides]``: Hydra composes, a :class:`~dit_engine.session.Session`
plans and runs.

Every cell is checked before anything runs, by a Hydra callback (``PlanCheckCallback``, registered
in ``conf/config.yaml``): a single run is planned in ``on_run_start``, before Hydra creates its
run directory, and reused by the job, so it is composed and planned once; a sweep's cells (the
command line's and ``hydra.sweeper.params``' choices, crossed) are all composed and planned in
``on_multirun_start``, before the first cell runs. Bad input is one line on stderr with exit code 2.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from dit_engine.config import register_schemas
from dit_engine.config.compose import explain_compose_error
from dit_engine.console import fail
from dit_engine.errors import ConfigError, DitEngineError
from dit_engine.session import Session

#: A sweep larger than this is checked on its first cells only (a search space, not a grid).
MAX_CHECKED_CELLS = 512

#: Sessions planned by the callback, by their sorted overrides, for the job to reuse.
_planned: dict[tuple[str, ...], Session] = {}


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config as the task function will see it: the ``hydra`` node removed."""
    task = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _user_overrides(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]


def sweep_cells(config: DictConfig) -> list[list[str]]:
    """Every cell of a sweep: ``hydra.sweeper.params`` and the command line (which wins for a key
    set in both), each comma list or ``range()`` expanded, crossed. A sweep value that is not a
    list (an Optuna ``interval``) is left to the sweeper; its key keeps the config's value."""
    parser = OverridesParser.create()
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    try:
        by_key = {o.key_or_group: o for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()])}
        by_key.update({o.key_or_group: o for o in parser.parse_overrides(_user_overrides(list(config.hydra.overrides.task)))})
    except HydraException as err:
        raise ConfigError(f"invalid sweep: {str(err).strip().splitlines()[0]}") from None
    choices = []
    for override in by_key.values():
        if not override.is_sweep_override():
            choices.append([override.input_line])
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:  # an interval: the sweeper samples it, nothing to enumerate
            continue
        prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(override.type.name, "")
        choices.append([f"{prefix}{override.key_or_group}={value}" for value in values])
    return [list(cell) for cell in itertools.islice(itertools.product(*choices), MAX_CHECKED_CELLS)]


class PlanCheckCallback(Callback):
    """Plans every cell before anything runs; bad input exits 2 with one line (see the module doc)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = _user_overrides(list(config.hydra.overrides.task))
        try:
            session = Session(_task_config(config), overrides).prepare()
        except DitEngineError as err:
            fail(err)
        _planned[tuple(sorted(overrides))] = session

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            cells = sweep_cells(config)
        except DitEngineError as err:
            fail(err)
        for cell in cells:
            try:
                session = Session.from_overrides(cell).prepare()
            except DitEngineError as err:
                fail(f"sweep cell [{' '.join(cell)}]: {err}" if len(cells) > 1 else err)
            _planned[tuple(sorted(cell))] = session


@hydra.main(config_path="pkg://dit_engine.conf", config_name="config", version_base=None)
def run_job(cfg: DictConfig) -> float | None:
    """One Hydra job: run the session into Hydra's output directory."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.runtime.choices.get("hydra/job_logging") == "disabled":
        cfg.quiet = True  # logging switched off: progress bars go too
    if cfg.quiet:
        logging.getLogger("dit_engine").setLevel(logging.WARNING)
    overrides = _user_overrides(list(hydra_cfg.overrides.task))
    planned = _planned.pop(tuple(sorted(overrides)), None)
    try:
        session = Session(cfg, overrides)
        if planned is not None:  # planned by PlanCheckCallback: reuse it, with this job's config
            session.adapter, session.workload, session.plan = planned.adapter, planned.workload, planned.plan
        metrics = session.run(hydra_cfg.runtime.output_dir)
    except DitEngineError as err:
        fail(err)
    return None if metrics is None else metrics["objective"]


def main() -> None:
    """Console entry point (``python -m dit_engine`` / ``dit-engine``).

    Hydra reports its own errors (a bad override found while composing) in several lines and
    exits 1; with ``HYDRA_FULL_ERROR`` set it raises them instead, so this one handler turns
    them, like every DitEngineError, into one line and exit code 2. A user who set
    ``HYDRA_FULL_ERROR=1`` themselves gets Hydra's full traceback, as Hydra documents.
    """
    register_schemas()
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run_job()
    except DitEngineError as err:
        fail(err)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        if wants_traceback:
            raise
        fail(explain_compose_error(err))
