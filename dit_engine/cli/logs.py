"""What the CLI's console shows: a failure's traceback only in the run's log, ``quiet=true``'s
short console, and no set-up chatter from the Optuna sweeper. The run's log file gets everything."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from dit_engine.console import FINAL_LINE

#: ``extra={LOG_FILE_ONLY: True}`` on a log record: the run's log file gets it, the console not
#: (a failure's traceback: the console gets one line instead).
LOG_FILE_ONLY = "dit_engine_log_file_only"


class _FileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, LOG_FILE_ONLY, False)


class _QuietConsole(logging.Filter):
    """``quiet=true`` on the console: warnings, errors and the run's final line (where its outputs
    went, marked ``extra={FINAL_LINE: True}``); the log file still gets everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, FINAL_LINE, False))


def _console_handlers() -> list[logging.Handler]:
    return [handler for logger in (logging.getLogger(), logging.getLogger("dit_engine")) for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)]


def _add_filter_once(filter_class: type[logging.Filter]) -> None:
    for handler in _console_handlers():
        if not any(isinstance(f, filter_class) for f in handler.filters):
            handler.addFilter(filter_class())


def console_without_tracebacks() -> None:
    """Keep records marked LOG_FILE_ONLY (a failure's traceback) off the console handlers."""
    _add_filter_once(_FileOnly)


def quiet_console() -> None:
    """Filter every console handler of the root and ``dit_engine`` loggers (Hydra's job logging)
    through :class:`_QuietConsole`; file handlers, and so the run's log file, are left as they are."""
    _add_filter_once(_QuietConsole)


class _DropSetupLines(logging.Filter):
    PREFIXES = ("Study name:", "Storage:", "Sampler:", "Directions:")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


def quiet_optuna(config: DictConfig) -> None:
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
