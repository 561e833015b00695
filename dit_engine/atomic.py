"""Atomic writes: build a file or folder under a temporary name, then move it into place.

Every temporary name is created in the same directory as (or inside) its final place, so it is on
the same filesystem and the final move is one ``os.replace`` (a ``rename``), which POSIX makes
atomic: a reader sees either the old entry or the complete new one, never half of it. If the
writing fails, the temporary is removed and the final path is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a new temporary file path beside ``path``; on success it replaces ``path``.

    The temporary (``.<stem>-XXXX<suffix>``, so hidden and with the same extension) is created in
    ``path``'s own directory, hence on the same filesystem, and the block's result is moved onto
    ``path`` with ``os.replace``: atomic, so ``path`` is always either its old content or the whole
    new one, and an existing file is replaced. Before the move it gets permissions ``mode``
    (``mkstemp`` creates it owner-only). If the block, the chmod or the move raises, the temporary
    is deleted, ``path`` is untouched and the exception propagates.
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`): all of it or, on failure, nothing."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding)


def staging_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """Create and return a new, empty, owner-only folder ``<parent>/<prefix>XXXX`` (``parent`` is created if needed).

    Files written into it are on ``parent``'s filesystem, so each can later be moved into place
    under ``parent`` with an atomic ``os.replace``. The caller removes the folder when done
    (``shutil.rmtree``); use a ``prefix`` starting with ``.`` so readers of ``parent`` skip it.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new staging folder beside ``path``; on success it is renamed to ``path``.

    The folder (``.<name>-XXXX``, see :func:`staging_dir`) is in ``path``'s parent, so the final
    ``os.replace`` is an atomic rename: readers see no folder or the complete one, never a partly
    written one. ``os.replace`` may only replace an empty folder, so if ``path`` already holds files
    the move raises ``OSError``. On any failure the staging folder and everything in it is deleted,
    ``path`` is untouched and the exception propagates.
    """
    path = Path(path)
    staging = staging_dir(path.parent, prefix=f".{path.name}-")
    try:
        yield staging
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
