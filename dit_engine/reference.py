"""Reference runs cached on disk: the same workload on the plain pipeline, run once.

A reference is keyed by everything that determines its images (model, dtype, device type, the
resolved workload, library versions). Cells of a sweep, in this process or in others started by a
Hydra launcher, find it under ``report.reference_dir``; a file lock makes sure only one of them
computes it while the others wait.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dit_engine.atomic import atomic_dir

log = logging.getLogger(__name__)


@dataclass
class Reference:
    """A reference run: its images (in workload order), mean latency and where it lives."""

    key: str
    path: Path
    images: list[Image.Image]
    latency_s: float
    created: str
    reused: bool
    #: the clock the reference was timed on and its mean seconds there (None: cached before clocks)
    clock: str | None = None
    clock_s: float | None = None

    @property
    def timing(self) -> dict[str, Any]:
        """Its timing as ``run_loop.mean_timing`` gives it: wall ``latency_s``, ``clock``, ``clock_s``."""
        return {"latency_s": self.latency_s, "clock": self.clock, "clock_s": self.clock_s}


def reference_key(material: dict[str, Any]) -> str:
    """Stable hash of the key material (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing); the file is removed when
    the lock is released, so no ``.lock`` file is left behind.

    Removing a lock file is safe only with a check on the other side: a process that opened the
    file before it was removed may get the lock on the removed file while a newcomer locks a new
    file of the same name. So a lock counts only if, once held, ``path`` still names the file
    that was locked; otherwise it is dropped and taken again. The holder removes the file before
    it releases the lock, so a waiter always sees the removal.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        # O_NOFOLLOW: a symlink planted at the lock's name must not make us open (or create) its target.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # locked a file its holder removed: take the lock on the current one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # closing releases the lock


#: Image names a reference may list: written by this module, never a path.
IMAGE_NAME = re.compile(r"^\d{3,}\.png$")


class DamagedReference(Exception):
    """A reference folder that cannot be read back (corrupt reference.json, missing image...)."""


def _load(folder: Path, key: str, reused: bool) -> Reference:
    try:
        info = json.loads((folder / "reference.json").read_text())
        names = info["images"]
        if not isinstance(names, list) or not all(isinstance(n, str) and IMAGE_NAME.match(n) for n in names):
            raise DamagedReference("reference.json lists image names that are not NNN.png")
        images = [Image.open(folder / name).convert("RGB") for name in names]
        latency = float(info["latency_s"])
        clock_s = info.get("clock_s")
        return Reference(key, folder, images, latency, str(info["created"]), reused, info.get("clock"),
                         None if clock_s is None else float(clock_s))
    except DamagedReference:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedReference(f"{type(err).__name__}: {err}") from None


def _set_aside(folder: Path, reason: str) -> None:
    """Move a damaged reference out of the way (kept for inspection) so it is computed anew."""
    aside = folder.with_name(f".damaged-{folder.name}-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}")
    os.replace(folder, aside)
    log.warning("reference %s is damaged (%s); set aside as %s and computed again", folder, reason, aside.name)


def get_or_create(root: str | Path, material: dict[str, Any],
                  run: Callable[[], tuple[list[Image.Image], dict[str, Any]]]) -> Reference:
    """The cached reference for ``material``, computing it with ``run() -> (images, timing)`` if
    absent (``timing``: wall ``latency_s``, ``clock``, ``clock_s``, as ``run_loop.mean_timing``)."""
    root = Path(root)
    key = reference_key(material)
    folder = root / key
    with _locked(root / f".{key}.lock"):
        if folder.exists():
            try:
                return _load(folder, key, reused=True)
            except DamagedReference as err:
                _set_aside(folder, str(err))
        images, timing = run()
        # Written into a staging folder renamed to ``folder`` at the end: readers never see half a reference.
        with atomic_dir(folder) as staging:
            names = []
            for index, image in enumerate(images):
                name = f"{index:03d}.png"
                image.save(staging / name)
                names.append(name)
            info = {
                "key": key,
                "material": material,
                "images": names,
                "latency_s": timing["latency_s"],
                "clock": timing["clock"],
                "clock_s": timing["clock_s"],
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
                "pid": os.getpid(),
            }
            (staging / "reference.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        return _load(folder, key, reused=False)
