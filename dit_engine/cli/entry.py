"""The console entry point: the command line read with Hydra's own parser, Hydra run with the
:class:`~dit_engine.cli.job.Job`, and every way it can end turned into its exit code: 0, 2 for
bad input, 1 for a failure, 130 for Ctrl-C and 143 for SIGTERM, each failure one line on stderr.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from dit_engine import completion
from dit_engine.cli.job import Job
from dit_engine.cli.signals import Terminated, stop_exit_code, stop_on_sigterm
from dit_engine.cli.torchrun import join_torchrun, leave_torchrun
from dit_engine.compat import hydra_args_parser, run_hydra
from dit_engine.config import register_schemas
from dit_engine.config.compose import expand_aliases, explain_compose_error
from dit_engine.config.schema import is_schema_name
from dit_engine.config.schema_source import schema_choice_problem
from dit_engine.console import fail, quiet_known_noise
from dit_engine.errors import DitEngineError

#: Where Hydra finds the shipped configs (plugins and ``--config-dir`` add theirs).
CONFIG_PATH = "pkg://dit_engine.conf"


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``python -m dit_engine`` / ``dit-engine``); ``argv`` defaults to
    ``sys.argv[1:]``.

    Hydra reports its own errors (a bad override found while composing) in several lines and
    exits 1; with ``HYDRA_FULL_ERROR`` set it raises them instead, so this one handler turns
    them, like every DitEngineError, into one line and exit code 2. A user who set
    ``HYDRA_FULL_ERROR=1`` themselves gets Hydra's full traceback, as Hydra documents. Ctrl-C
    exits 130 and SIGTERM 143, each with one line, wherever the run was (its ranks, if it started
    any, are stopped first); the stopped run's files were never moved into place.
    """
    previous = stop_on_sigterm()
    try:
        _run(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt as stop:
        how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
        print(f"dit_engine: {how}; the unfinished run left no outputs in place", file=sys.stderr)
        sys.exit(stop_exit_code(stop))
    finally:
        signal.signal(signal.SIGTERM, previous)  # main() may run inside a test's process


def _run(argv: list[str]) -> None:
    register_schemas()
    quiet_known_noise()
    completion.handle(argv)  # -sc install/uninstall=bash: our script; query: the line normalised
    parser = hydra_args_parser()
    args = parser.parse_args(argv)
    args.overrides = expand_aliases(args.overrides)
    problem = _schema_override_problem(args.overrides)
    if problem:
        fail(problem)
    scratch = join_torchrun(args)
    users_value = os.environ.get("HYDRA_FULL_ERROR")
    wants_traceback = users_value == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        run_hydra(args, parser, Job(wants_traceback), config_path=CONFIG_PATH, config_name="config")
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
        leave_torchrun(scratch)


def _schema_override_problem(overrides: list[str]) -> str | None:
    """A command-line override that chooses an internal schema as a group option
    (``cache=schema_dbcache``, also inside a sweep list): refused before Hydra composes anything."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
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
