"""``python -m dit_engine [overrides]``: Hydra composes, a :class:`~dit_engine.session.Session`
plans and runs.

Every cell is checked before anything runs, by a Hydra callback (``PlanCheckCallback``, registered
in ``conf/config.yaml``): a single run is planned in ``on_run_start``, before Hydra creates its
run directory, and reused by the job, so it is composed and planned once; a sweep's cells (the
command line's and ``hydra.sweeper.params``' choices, crossed) are all composed (by the running
app's config loader, so ``--config-dir`` and ``hydra.searchpath`` options compose as in the
launcher) and planned in ``on_multirun_start``, before the first cell runs. A config that defines
a sweep, started without ``-m``, and an internal schema chosen as an option are refused there too.
Bad input is one line on stderr with exit code 2.

``--help`` and shell completion (``-sc``, see :mod:`dit_engine.completion`) import neither torch
nor diffusers: this module imports the session, the plan and the launcher only inside a run.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

# Only light modules here: ``--help`` and shell completion import this module and must start
# without torch, diffusers or transformers (tests/test_cli_startup.py checks it). The session, the
# plan and the parallel launcher are imported where a run needs them.
from dit_engine.atomic import atomic_write_text
from dit_engine.config import register_schemas
from dit_engine.config.compose import expand_aliases, explain_compose_error
from dit_engine.config.schema import is_schema_name
from dit_engine.config.schema_source import schema_choice_problem
from dit_engine.console import FINAL_LINE, fail, quiet_known_noise
from dit_engine.errors import ConfigError, DitEngineError

if TYPE_CHECKING:
    from dit_engine.session import Session

#: A sweep larger than this is checked on its first cells only (a search space, not a grid).
MAX_CHECKED_CELLS = 512

#: A failed sweep cell's record (the sweep report marks the cell FAILED with its reason).
FAILED_FILE = "failed.json"
#: Where main() keeps the user's own HYDRA_FULL_ERROR (it sets Hydra's to 1 to handle errors itself).
_USER_FULL_ERROR = "DIT_ENGINE_USER_HYDRA_FULL_ERROR"
log = logging.getLogger(__name__)

#: Sessions planned by the callback, by their sorted overrides, for the job to reuse.
_planned: dict[tuple[str, ...], "Session"] = {}


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


def output_dir_problem(key: str, path: str, what: str) -> str | None:
    """Why ``path`` cannot hold a new run (or sweep): an earlier one's directory, a file, unwritable."""
    from dit_engine.outputs import name_length_problem, writable_dir_problem

    folder = Path(path).expanduser()
    problem = name_length_problem(key, path)  # before is_dir(), which fails on such a name
    if problem:
        return problem
    if folder.is_dir() and any(folder.iterdir()):
        return f"{key}={path} already holds files (an earlier {what}?); dit_engine never writes into an earlier run: choose a new directory"
    return writable_dir_problem(key, path, verb="created")


#: What a single run is about to create: its run directory (and whether it existed, empty) and
#: the missing folders above it. A run refused at run time for bad input removes them again.
_new_run_dir: dict[str, Any] = {}


def _remember_new_folders(run_dir: Path) -> None:
    run_dir = run_dir.expanduser().absolute()
    parents = []
    folder = run_dir.parent
    while not folder.exists():
        parents.append(folder)
        folder = folder.parent
    _new_run_dir.update(path=run_dir, existed=run_dir.is_dir(), parents=parents)


def _remove_new_folders() -> None:
    """Undo what a run refused for bad input created: its files, its folder, empty new parents."""
    run_dir = _new_run_dir.get("path")
    if run_dir is None or not run_dir.is_dir():
        return
    for logger in (logging.getLogger(), logging.getLogger("dit_engine")):
        for handler in list(logger.handlers):  # Hydra's job log file lives in the run dir
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(run_dir):
                handler.close()
                logger.removeHandler(handler)
    if _new_run_dir["existed"]:
        for child in run_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    else:
        shutil.rmtree(run_dir)
        for parent in _new_run_dir["parents"]:
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    _new_run_dir.clear()


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


def _running_config_loader():
    """The config loader of the Hydra app running now (its search path holds ``--config-dir`` and
    ``hydra.searchpath``), or None outside one."""
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    return global_hydra.hydra.config_loader if global_hydra.is_initialized() else None


def _compose_cell(master: DictConfig, cell: list[str]) -> DictConfig:
    """A sweep cell's config composed exactly as Hydra's launcher will compose it: the running app's
    config loader (same search path), the sweep's hydra overrides plus the cell's."""
    loader = _running_config_loader()
    if loader is None:  # not under a Hydra app (a test calling the callback): the shipped config tree
        from dit_engine.config import compose_config

        return compose_config(cell)
    try:
        config = loader.load_sweep_config(master, list(cell))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(explain_compose_error(err)) from None
    problem = _choices_problem(config)
    if problem:
        raise ConfigError(problem)
    return _task_config(config)


def _quiet_optuna(config: DictConfig) -> None:
    """Optuna's sweeper starts with set-up lines that say nothing a user chose: alembic (imported
    by Optuna's storage) logs each of its plugins, Optuna announces the new study and the sweeper
    logs study name, storage, sampler and directions. Warnings and the best trial still show."""
    target = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    if "optuna" not in target.lower():
        return
    logging.getLogger("alembic").setLevel(logging.WARNING)  # before optuna imports it
    logging.getLogger("hydra_plugins.hydra_optuna_sweeper._impl").addFilter(_DropSetupLines())
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # the sweeper reports its own missing dependency
        pass


class _DropSetupLines(logging.Filter):
    PREFIXES = ("Study name:", "Storage:", "Sampler:", "Directions:")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


class PlanCheckCallback(Callback):
    """Plans every cell before anything runs; bad input exits 2 with one line (see the module doc).

    It also refuses an output directory that is a file, unwritable, or an earlier run's, before
    Hydra writes anything into it, an internal schema chosen as an option, and a sweep config
    (``hydra.sweeper.params``) started without ``-m``.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dit_engine.session import Session

        overrides = _user_overrides(list(config.hydra.overrides.task))
        try:
            problem = _choices_problem(config) or _sweep_without_multirun_problem(config, overrides)
            if problem:
                raise ConfigError(problem)
            run_dir = str(config.hydra.run.dir)
            problem = output_dir_problem("hydra.run.dir", run_dir, "run")
            if problem:
                raise ConfigError(problem)
            _remember_new_folders(Path(run_dir))
            session = Session(_task_config(config), overrides).prepare()
        except DitEngineError as err:
            fail(err)
        _planned[tuple(sorted(overrides))] = session

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from dit_engine.session import Session

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
        for cell in cells:
            try:
                session = Session(_compose_cell(config, cell), cell).prepare()
            except DitEngineError as err:
                fail(f"sweep cell [{' '.join(cell)}]: {err}" if len(cells) > 1 else err)
            _planned[tuple(sorted(cell))] = session
        _quiet_optuna(config)


@hydra.main(config_path="pkg://dit_engine.conf", config_name="config", version_base=None)
def run_job(cfg: DictConfig) -> float | None:
    """One Hydra job: run the session into Hydra's output directory.

    A single run that fails exits (2 for bad input, 1 for an internal error, one line each, the
    traceback in the run's log). A sweep cell that fails writes ``failed.json`` (the reason, one
    line) into its directory and the sweep goes on; its report marks the cell FAILED.
    """
    from dit_engine.parallel.launch import run_on_ranks
    from dit_engine.parallel.mesh import bind_local_device, launched_world
    from dit_engine.plan import parallel_world_size
    from dit_engine.session import Session

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.runtime.choices.get("hydra/job_logging") == "disabled":
        cfg.quiet = True  # logging switched off: progress bars go too
    if cfg.quiet:
        quiet_console()
    _console_without_tracebacks()
    overrides = _user_overrides(list(hydra_cfg.overrides.task))
    planned = _planned.pop(tuple(sorted(overrides)), None)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        session = Session(cfg, overrides)
        if planned is not None:  # planned by PlanCheckCallback: reuse it, with this job's config
            session.adapter, session.workload, session.plan = planned.adapter, planned.workload, planned.plan
        world = parallel_world_size(cfg)
        if world > 1 and launched_world() is None and not cfg.dry_run:
            # Not under torchrun: start the ranks here (parallel.launch); rank 0 writes.
            metrics = run_on_ranks(cfg, overrides, output_dir, world)
        else:
            bind_local_device(cfg.model.device)
            metrics = session.run(output_dir, timing_note=_shared_cores_note(hydra_cfg))
    except Exception as err:  # noqa: BLE001 - every failure becomes one line (and a log entry)
        from dit_engine.errors import NonFiniteOutputError

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
            return None
        if bad_input:
            _remove_new_folders()
            fail(err)
        log_file = output_dir / f"{hydra_cfg.job.name}.log"
        if isinstance(err, NonFiniteOutputError):
            print(f"dit_engine: error: {reason}; nothing was written as a result (log: {log_file})", file=sys.stderr)
        else:
            print(f"dit_engine: {reason}; the traceback is in {log_file} (HYDRA_FULL_ERROR=1 prints it)", file=sys.stderr)
        if os.environ.get(_USER_FULL_ERROR) == "1":
            raise
        sys.exit(1)
    return None if metrics is None else metrics["objective"]


#: ``extra={LOG_FILE_ONLY: True}`` on a log record: the run's log file gets it, the console not
#: (a failure's traceback: the console gets one line instead).
LOG_FILE_ONLY = "dit_engine_log_file_only"


class _FileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, LOG_FILE_ONLY, False)


def _console_handlers() -> list[logging.Handler]:
    return [handler for logger in (logging.getLogger(), logging.getLogger("dit_engine")) for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)]


def _console_without_tracebacks() -> None:
    """Keep records marked LOG_FILE_ONLY (a failure's traceback) off the console handlers."""
    for handler in _console_handlers():
        if not any(isinstance(f, _FileOnly) for f in handler.filters):
            handler.addFilter(_FileOnly())


class _QuietConsole(logging.Filter):
    """``quiet=true`` on the console: warnings, errors and the run's final line (where its outputs
    went, marked ``extra={FINAL_LINE: True}``); the log file still gets everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, FINAL_LINE, False))


def quiet_console() -> None:
    """Filter every console handler of the root and ``dit_engine`` loggers (Hydra's job logging)
    through :class:`_QuietConsole`; file handlers, and so the run's log file, are left as they are."""
    for handler in _console_handlers():
        if not any(isinstance(f, _QuietConsole) for f in handler.filters):
            handler.addFilter(_QuietConsole())


def _shared_cores_note(hydra_cfg) -> str | None:
    """Why this job's timings cannot be trusted, when sweep cells run at once (joblib n_jobs != 1)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs")
    if n_jobs is None or n_jobs == 1:
        return None
    return f"sweep cells ran {n_jobs if n_jobs > 0 else 'all'} at a time on {os.cpu_count()} cores (hydra.launcher.n_jobs={n_jobs})"


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _join_torchrun() -> str | None:
    """Under torchrun every rank runs this CLI: rank 0 writes the run directory, the others run
    into a scratch folder (returned, removed at the end). Sweeps are refused there: each sweep
    cell starts its own ranks when run without torchrun."""
    world = os.environ.get("WORLD_SIZE")  # parallel.mesh.launched_world, read without importing torch
    if not (world and world.isdigit()):
        return None
    from dit_engine.parallel.mesh import rank_from_env

    if any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
        fail(DitEngineError("sweeps (-m) do not run under torchrun; run the sweep without torchrun, each cell starts its own ranks"))
    if rank_from_env() == 0:
        return None
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"dit_engine_rank{rank_from_env()}_")
    sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "quiet=true"]
    return scratch


def _leave_torchrun(scratch: str | None) -> None:
    if "torch.distributed" in sys.modules:  # only a run imports it (never --help or completion)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


#: Hydra's flags that take a value (the next argument is not an override)
_FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package", "-sc", "--shell-completion", "-cp", "--config-path",
                     "-cn", "--config-name", "-cd", "--config-dir", "--experimental-rerun"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _command_line_overrides(args: list[str]) -> list[str]:
    """The overrides among the arguments (Hydra's flags and their values left out)."""
    overrides, skip = [], False
    for index, arg in enumerate(args):
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE or (arg == "--info" and index + 1 < len(args) and args[index + 1] in _INFO_VALUES)
        else:
            overrides.append(arg)
    return overrides


def _schema_override_problem(args: list[str]) -> str | None:
    """A command-line override that chooses an internal schema as a group option
    (``cache=schema_dbcache``, also inside a sweep list): refused before Hydra composes anything."""
    try:
        parsed = OverridesParser.create().parse_overrides(_command_line_overrides(args))
    except Exception:  # noqa: BLE001 - a malformed override: Hydra reports it itself
        return None
    for override in parsed:
        group = override.key_or_group
        if "." in group or group.startswith("hydra") or override.is_delete():
            continue
        try:
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:  # noqa: BLE001 - an interval or range: not an option name
            continue
        chosen = next((str(v) for v in values if is_schema_name(str(v))), None)
        if chosen is not None:
            return schema_choice_problem({group: chosen})
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that a run stops
    the same way (its ranks stopped, its staged files discarded); the process then exits 143."""


def _raise_terminated(signum, frame) -> None:
    if _in_finalizer(frame):
        # Python prints and ignores an exception raised inside __del__: the stop would be lost and
        # the process go on. Deliver the signal again a moment later, outside the finalizer.
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return
    raise Terminated


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def stop_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` (left alone when the process was started with SIGTERM
    ignored, as Python leaves an ignored SIGINT); the handler it replaced."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    return previous


def stop_exit_code(stop: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (128 + the signal's number, as a shell reports it)."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


def main() -> None:
    """Console entry point (``python -m dit_engine`` / ``dit-engine``).

    Hydra reports its own errors (a bad override found while composing) in several lines and
    exits 1; with ``HYDRA_FULL_ERROR`` set it raises them instead, so this one handler turns
    them, like every DitEngineError, into one line and exit code 2. A user who set
    ``HYDRA_FULL_ERROR=1`` themselves gets Hydra's full traceback, as Hydra documents. Ctrl-C
    exits 130 and SIGTERM 143, each with one line, wherever the run was (its ranks, if it started
    any, are stopped first); the stopped run's files were never moved into place.
    """
    previous = stop_on_sigterm()
    try:
        _main()
    except KeyboardInterrupt as stop:
        how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
        print(f"dit_engine: {how}; the unfinished run left no outputs in place", file=sys.stderr)
        sys.exit(stop_exit_code(stop))
    finally:
        signal.signal(signal.SIGTERM, previous)  # main() may run inside a test's process


def _main() -> None:
    from dit_engine import completion

    register_schemas()
    quiet_known_noise()
    completion.handle(sys.argv[1:])  # -sc install/uninstall=bash: our script; query: the line normalised
    sys.argv[1:] = expand_aliases(sys.argv[1:])
    problem = _schema_override_problem(sys.argv[1:])
    if problem:
        fail(problem)
    scratch = _join_torchrun()
    users_value = os.environ.get("HYDRA_FULL_ERROR")
    wants_traceback = users_value == "1"
    os.environ[_USER_FULL_ERROR] = "1" if wants_traceback else ""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run_job()
    except DitEngineError as err:
        fail(err)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        if wants_traceback:
            raise
        fail(explain_compose_error(err))
    finally:
        if users_value is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = users_value
        _leave_torchrun(scratch)
