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
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dit_engine.atomic import atomic_dir


@dataclass
class Reference:
    """A reference run: its images (in workload order), mean latency and where it lives."""

    key: str
    path: Path
    images: list[Image.Image]
    latency_s: float
    created: str
    reused: bool


def reference_key(material: dict[str, Any]) -> str:
    """Stable hash of the key material (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(folder: Path, key: str, reused: bool) -> Reference:
    info = json.loads((folder / "reference.json").read_text())
    images = [Image.open(folder / name).convert("RGB") for name in info["images"]]
    return Reference(key, folder, images, info["latency_s"], info["created"], reused)


def get_or_create(root: str | Path, material: dict[str, Any], run: Callable[[], tuple[list[Image.Image], float]]) -> Reference:
    """The cached reference for ``material``, computing it with ``run() -> (images, latency_s)`` if absent."""
    root = Path(root)
    key = reference_key(material)
    folder = root / key
    with _locked(root / f".{key}.lock"):
        if (folder / "reference.json").is_file():
            return _load(folder, key, reused=True)
        images, latency = run()
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
                "latency_s": latency,
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
                "pid": os.getpid(),
            }
            (staging / "reference.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        return _load(folder, key, reused=False)
