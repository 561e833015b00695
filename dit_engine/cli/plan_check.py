"""Every cell is checked before anything runs, by a Hydra callback (:class:`PlanCheckCallback`,
registered in ``conf/config.yaml``).

A single run is planned in ``on_run_start``, before Hydra creates its run directory, and handed to
its job in ``on_job_start``, so it is composed and planned once; a sweep's cells (the command
line's and ``hydra.sweeper.params``' choices, crossed: :func:`~dit_engine.cli.sweep.sweep_cells`)
are all composed (by the running app's config loader, so ``--config-dir`` and ``hydra.searchpath``
options compose as in the launcher) and planned in ``on_multirun_start``, before the first cell
runs. A config that defines a sweep, started without ``-m``, and an internal schema chosen as an
option are refused there too. Bad input is one line on stderr with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from dit_engine.cli.job import Job, Planned
from dit_engine.cli.logs import quiet_optuna
from dit_engine.cli.overrides import user_overrides
from dit_engine.cli.run_dir import NewRunDir, output_dir_problem
from dit_engine.cli.sweep import sweep_cells
from dit_engine.compat import running_config_loader
from dit_engine.config import compose_config
from dit_engine.config.compose import explain_compose_error
from dit_engine.config.schema_source import schema_choice_problem
from dit_engine.console import fail
from dit_engine.errors import ConfigError, DitEngineError, PlanError


class PlanCheckCallback(Callback):
    """Plans every cell before anything runs; bad input exits 2 with one line (see the module doc).

    It also refuses an output directory that is a file, unwritable, or an earlier run's, before
    Hydra writes anything into it, an internal schema chosen as an option, and a sweep config
    (``hydra.sweeper.params``) started without ``-m``.
    """

    def __init__(self) -> None:
        #: What was planned for each cell (by its sorted overrides), until its job starts.
        self._planned: dict[tuple[str, ...], Planned] = {}

    def __getstate__(self) -> dict[str, Any]:
        # A launcher that runs jobs in other processes (joblib) pickles the callbacks with them:
        # the planned sessions stay here, and each such job plans again.
        return {**self.__dict__, "_planned": {}}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = user_overrides(config.hydra.overrides.task)
        try:
            problem = _choices_problem(config) or _sweep_without_multirun_problem(config, overrides)
            if problem:
                raise ConfigError(problem)
            run_dir = str(config.hydra.run.dir)
            problem = output_dir_problem("hydra.run.dir", run_dir, "run")
            if problem:
                raise ConfigError(problem)
            new_run_dir = NewRunDir.before_run(Path(run_dir))
            task = _task_config(config)
            _raise_early_problems(task)  # before torch is imported: a config mistake answers at once
            # Imported here: the session imports torch, which --help, shell completion and the
            # early checks do without.
            from dit_engine.session import Session

            session = Session(task, overrides).prepare()
        except DitEngineError as err:
            fail(err)
        self._planned[_cell_key(overrides)] = Planned(session, new_run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            problem = _choices_problem(config)
            if problem:
                raise ConfigError(problem)
            problem = output_dir_problem("hydra.sweep.dir", str(config.hydra.sweep.dir), "sweep")
            if problem:
                raise ConfigError(problem)
            cells = sweep_cells(config)
        except DitEngineError as err:
            fail(err)
        composed = []
        for cell in cells:  # every cell's config mistakes before torch is imported
            try:
                task = _compose_cell(config, cell)
                _raise_early_problems(task)
            except DitEngineError as err:
                fail(f"sweep cell [{' '.join(cell)}]: {err}" if len(cells) > 1 else err)
            composed.append((cell, task))
        # Imported here: the session imports torch, which --help, shell completion and the early
        # checks do without.
        from dit_engine.session import Session

        for cell, task in composed:
            try:
                session = Session(task, cell).prepare()
            except DitEngineError as err:
                fail(f"sweep cell [{' '.join(cell)}]: {err}" if len(cells) > 1 else err)
            self._planned[_cell_key(cell)] = Planned(session)
        quiet_optuna(config)

    def on_job_start(self, config: DictConfig, *, task_function: Any, **kwargs: Any) -> None:
        """Hand the job what was planned for its cell (Hydra passes the task function here)."""
        planned = self._planned.pop(_cell_key(user_overrides(config.hydra.overrides.task)), None)
        if isinstance(task_function, Job):
            task_function.planned = planned


def _raise_early_problems(task: DictConfig) -> None:
    """Raise what the composed config alone decides (:mod:`dit_engine.early_checks`)."""
    from dit_engine.early_checks import early_problems  # imported on use: --help does without it

    problems = early_problems(task)
    if problems:
        raise PlanError(problems)


def _cell_key(overrides: list[str]) -> tuple[str, ...]:
    """A cell's overrides in any order and in the spelling Hydra's sweeper gives its job (the
    command line's ``dry_run=true`` reaches the job as ``dry_run=True``)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return tuple(sorted(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in parsed))


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config as the task function will see it: the ``hydra`` node removed."""
    task = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    with open_dict(task):
        task.pop("hydra", None)
    return task


def _choices_problem(config: DictConfig) -> str | None:
    """An internal schema chosen as a group option (``cache=schema_dbcache``), from Hydra's record."""
    return schema_choice_problem(OmegaConf.select(config, "hydra.runtime.choices") or {})


def _sweep_without_multirun_problem(config: DictConfig, overrides: list[str]) -> str | None:
    """A config whose ``hydra.sweeper.params`` define a sweep, started as a single run (no ``-m``):
    Hydra would silently run one job with the config's defaults instead of the sweep."""
    params = OmegaConf.select(config, "hydra.sweeper.params")
    if not params:
        return None
    experiment = (OmegaConf.select(config, "hydra.runtime.choices") or {}).get("experiment")
    what = f"+experiment={experiment}" if experiment else "this config"
    command = " ".join(["python -m dit_engine -m", *overrides])
    return f"{what} is a sweep (hydra.sweeper.params: {', '.join(map(str, params))}); run it with -m: {command}"


def _compose_cell(master: DictConfig, cell: list[str]) -> DictConfig:
    """A sweep cell's config composed exactly as Hydra's launcher will compose it: the running app's
    config loader (same search path), the sweep's hydra overrides plus the cell's."""
    loader = running_config_loader()
    if loader is None:  # not under a Hydra app (a test calling the callback): the shipped config tree
        return compose_config(cell)
    try:
        config = loader.load_sweep_config(master, list(cell))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(explain_compose_error(err)) from None
    problem = _choices_problem(config)
    if problem:
        raise ConfigError(problem)
    return _task_config(config)

