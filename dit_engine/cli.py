"""Command-line checks done before Hydra runs anything.

Every cell of the command line (one cell, or every combination of a ``-m`` sweep) is composed
and its plan compiled up front, so bad input fails in one line with exit code 2 before any
weight is loaded or any sweep cell has run.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from dit_engine.config import compose_config
from dit_engine.engine import prepare
from dit_engine.errors import ConfigError, DitEngineError

#: Hydra flags that print something instead of running: no validation needed.
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc"}
#: Hydra flags followed by a value that is not an override.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--info", "-i", "--experimental-rerun", "--shell-completion", "-sc"}


def split_command_line(argv: list[str]) -> tuple[list[str], bool, bool]:
    """``(overrides, multirun, informational)`` from Hydra's command line."""
    overrides, multirun, informational = [], False, False
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg.startswith("-"):
            informational |= arg.split("=")[0] in INFO_FLAGS
            skip_next = arg in FLAGS_WITH_VALUE and arg not in ("--info", "-i")
        else:
            overrides.append(arg)
    return overrides, multirun, informational


def sweep_cells(overrides: list[str]) -> list[list[str]]:
    """Every combination of a basic sweep (``cache=none,dbcache a=1,2`` -> 4 cells)."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    except HydraException as err:
        raise ConfigError(f"invalid sweep: {str(err).strip().splitlines()[0]}") from None


def validate_command_line(argv: list[str]) -> None:
    """Compose and plan every cell; raise a DitEngineError naming the cell and the fix."""
    overrides, multirun, informational = split_command_line(argv)
    if informational:
        return
    user_overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    cells = sweep_cells(user_overrides) if multirun else [user_overrides]
    for cell in cells:
        try:
            prepare(compose_config(cell))
        except DitEngineError as err:
            if len(cells) > 1:
                raise DitEngineError(f"sweep cell [{' '.join(cell)}]: {err}") from None
            raise
