"""A run's output directory: refused before Hydra writes into it when it cannot hold a new run,
and removed again when the run it was created for is refused for bad input."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path


def output_dir_problem(key: str, path: str, what: str) -> str | None:
    """Why ``path`` cannot hold a new run (or sweep): an earlier one's directory, a file, unwritable."""
    # Imported here: dit_engine.outputs imports PIL, which --help and shell completion do without.
    from dit_engine.outputs import name_length_problem, writable_dir_problem

    folder = Path(path).expanduser()
    problem = name_length_problem(key, path)  # before is_dir(), which fails on such a name
    if problem:
        return problem
    if folder.is_dir() and any(folder.iterdir()):
        return f"{key}={path} already holds files (an earlier {what}?); dit_engine never writes into an earlier run: choose a new directory"
    return writable_dir_problem(key, path, verb="created")


@dataclass(frozen=True)
class NewRunDir:
    """What a single run is about to create: its run directory (and whether it existed, empty)
    and the missing folders above it, recorded before Hydra creates them."""

    path: Path
    existed: bool
    parents: tuple[Path, ...]

    @classmethod
    def before_run(cls, run_dir: Path) -> NewRunDir:
        """Record ``run_dir`` and its missing parents as they are now."""
        run_dir = run_dir.expanduser().absolute()
        parents = []
        folder = run_dir.parent
        while not folder.exists():
            parents.append(folder)
            folder = folder.parent
        return cls(path=run_dir, existed=run_dir.is_dir(), parents=tuple(parents))

    def remove(self) -> None:
        """Undo what the refused run created: its files, its folder, the empty new parents."""
        if not self.path.is_dir():
            return
        for logger in (logging.getLogger(), logging.getLogger("dit_engine")):
            for handler in list(logger.handlers):  # Hydra's job log file lives in the run dir
                if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(self.path):
                    handler.close()
                    logger.removeHandler(handler)
        if self.existed:
            for child in self.path.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(self.path)
            for parent in self.parents:
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
