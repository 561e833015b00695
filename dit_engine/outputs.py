"""Writing a run's files: staged, then moved into place only when the run succeeded.

A failing run therefore never leaves half-written files, and never replaces an earlier run's.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from dit_engine.atomic import staging_dir
from dit_engine.errors import DitEngineError


def finite_or_none(data: Any) -> Any:
    """``data`` with every inf / nan float replaced by None, recursively."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(value) for value in data]
    return data


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-zA-Z0-9]+", "_", text).strip("_").lower()[:limit] or "image"


def film_strip(frames) -> Image.Image:
    """The frames of one video (PIL images or an array (F, H, W, C) in [0, 1]) side by side."""
    if not isinstance(frames, (list, tuple)):
        frames = [Image.fromarray((frame * 255).round().clip(0, 255).astype("uint8")) for frame in frames]
    width, height = frames[0].size
    strip = Image.new("RGB", (width * len(frames), height))
    for index, frame in enumerate(frames):
        strip.paste(frame.convert("RGB"), (index * width, 0))
    return strip


def contact_sheet(images: list[Image.Image], labels: list[str], cell: int = 128) -> Image.Image:
    """All images in one grid, each scaled to ``cell`` px (nearest for tiny images) and labelled."""
    columns = min(len(images), 5) or 1
    rows = math.ceil(len(images) / columns)
    label_height = 14
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, label) in enumerate(zip(images, labels)):
        resample = Image.NEAREST if max(image.size) < cell else Image.LANCZOS
        thumb = image.convert("RGB").resize((cell, cell), resample)
        x, y = (index % columns) * cell, (index // columns) * (cell + label_height)
        sheet.paste(thumb, (x, y + label_height))
        draw.text((x + 2, y + 1), label[:24], fill="black")
    return sheet


def name_length_problem(key: str, path: str) -> str | None:
    """A folder name or a whole path longer than the file system takes (ENAMETOOLONG on mkdir)."""
    folder = Path(path).expanduser()
    existing = Path(folder.anchor or ".")
    for candidate in reversed([folder, *folder.parents]):  # the deepest ancestor that exists
        try:
            if candidate.is_dir():
                existing = candidate
        except OSError:
            break
    try:
        name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):  # not a POSIX file system: let mkdir say it
        return None
    too_long = next((part for part in folder.parts if len(os.fsencode(part)) > name_max), None)
    if too_long is not None:
        return (f"{key}={path}: the folder name {too_long[:24]}... has {len(os.fsencode(too_long))} bytes, the file system "
                f"takes at most {name_max}; choose a shorter name")
    if len(os.fsencode(str(folder.absolute()))) >= path_max:
        return f"{key}: the path has {len(os.fsencode(str(folder.absolute())))} bytes, the file system takes at most {path_max - 1}; choose a shorter path"
    return None


def writable_dir_problem(key: str, path: str, verb: str = "written") -> str | None:
    """Why ``path`` (the value of config key ``key``) cannot be, or become, a writable directory;
    None when it can. ``verb`` says what would fail (``written``, ``created``)."""
    if not str(path).strip():
        return f"{key} is empty; give a directory"
    folder = Path(path).expanduser()
    problem = name_length_problem(key, path)  # first: stat() itself fails on such a name
    if problem:
        return problem
    if folder.exists() and not folder.is_dir():
        return f"{key}={path} is a file, not a directory; choose a directory"
    existing = folder
    while not existing.exists():
        if existing.is_symlink():  # a link to nothing: mkdir would fail on it
            return (f"{key}={path} cannot be {verb}: {existing} is a symbolic link to {os.readlink(existing)}, which does "
                    "not exist; create that directory or choose another")
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return f"{key}={path} cannot be {verb} ({existing} is not a writable directory); choose a directory you can write"
    return None


class StagedRunFiles:
    """Collects a run's files in a hidden staging folder; ``commit`` moves them into the run dir.

    The staging folder lies inside the run dir (:func:`dit_engine.atomic.staging_dir`), so each file
    reaches its final name with one atomic ``os.replace``.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.stage = staging_dir(self.run_dir, prefix=".staging-")

    def path(self, relative: str) -> Path:
        target = self.stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_text(self, relative: str, text: str) -> None:
        self.path(relative).write_text(text)

    def write_json(self, relative: str, data: Any) -> None:
        """Standard JSON: non-finite floats (PSNR of identical images) are written as null."""
        self.write_text(relative, json.dumps(finite_or_none(data), indent=2, default=str, allow_nan=False) + "\n")

    def save_image(self, relative: str, image: Image.Image) -> None:
        image.save(self.path(relative))

    def commit(self) -> list[str]:
        """Move every staged file into the run dir (refusing to replace existing ones)."""
        files = sorted(p.relative_to(self.stage) for p in self.stage.rglob("*") if p.is_file())
        clashes = [str(f) for f in files if (self.run_dir / f).exists()]
        if clashes:
            self.discard()
            raise DitEngineError(
                f"{self.run_dir} already holds {', '.join(clashes[:3])}; dit_engine never overwrites an earlier "
                "run's outputs: choose a new hydra.run.dir"
            )
        for relative in files:
            target = self.run_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.stage / relative, target)
        self.discard()
        return [str(f) for f in files]

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
