"""The LoRA adapters a server holds: loaded from inside ``serve.lora_dirs`` only (``POST /v1/loras``),
unloaded (``DELETE /v1/loras/{name}``), and ``lora.path=``'s adapter as every request's default.

Loading and unloading take the pipeline lock, so they happen between pipeline calls; under a
parallel plan the runner passes each to every rank (:mod:`dit_engine.serve.control`). Under
``serve.replicas=N`` the replicas share one list of LoRAs (a :class:`LoraRegistry`): a LoRA loaded
or unloaded through any replica is loaded or unloaded by each other one before its next request.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from dit_engine.errors import DitEngineError
from dit_engine.lora import non_finite_weight_in_file
from dit_engine.serve.errors import BadRequestError, LimitError
from dit_engine.serve.runner import PipelineRunner

log = logging.getLogger(__name__)

#: the one answer to every LoRA path the server will not load, whatever the reason (outside
#: ``serve.lora_dirs``, missing, unreadable, not a file...), so the answer tells nothing about
#: files outside the allowed directories
LORA_REFUSED = ("no LoRA the server may load at that path: give a .safetensors file (or a folder holding one) "
                "inside serve.lora_dirs")


class LoraRegistry(Protocol):
    """The LoRAs every replica should hold, by name (their paths): shared by the replicas."""

    def claim(self, name: str, path: str) -> bool:
        """Add ``name``; False when it is there already."""

    def release(self, name: str) -> None:
        """Drop ``name`` (nothing when it is not there)."""

    def wanted(self) -> dict[str, str]:
        """Every name with its path."""


class LoraStore:
    """The loaded LoRAs, ``paths`` (name -> the path it was loaded from), and ``default``, the
    adapters requests that name no LoRA use: ``((name, scale),)`` of ``lora.path=``'s adapter, or
    ``()`` without one."""

    def __init__(self, lora_dirs: list[str], lora: Any, runner: PipelineRunner, pipe_lock: threading.Lock,
                 registry: LoraRegistry | None = None):
        """``lora_dirs``: ``serve.lora_dirs``; ``lora``: the run's ``lora`` config (its adapter is
        loaded with the pipeline already); ``pipe_lock``: held during a pipeline call;
        ``registry``: the replicas' shared list (``serve.replicas=N``), or None."""
        self.dirs = [Path(os.path.expanduser(folder)).resolve() for folder in lora_dirs]
        self.runner = runner
        self.pipe_lock = pipe_lock
        self.registry = registry
        self.paths: dict[str, str] = {}
        self._unloadable: set[tuple[str, str]] = set()  # (name, path) another replica loaded that fails here
        self.default: tuple[tuple[str, float], ...] = ((lora.name, lora.scale),) if lora.path is not None else ()
        if lora.path is not None:
            self.paths[lora.name] = lora.path
            if registry is not None:
                registry.claim(lora.name, lora.path)  # every replica loads it at start: the first one claims it

    def load(self, name: str, path: str) -> None:
        """Load the LoRA at ``path`` (inside ``serve.lora_dirs``) as ``name``. BadRequestError
        (HTTP 400): :data:`LORA_REFUSED` for any path it may not load, or why the file does not fit
        the model; LimitError (HTTP 422): weights that are NaN or infinite."""
        self.sync()
        already = BadRequestError(f"lora {name!r} is already loaded; DELETE /v1/loras/{name} first or pick another name")
        if name in self.paths:
            raise already
        weights = self._file(path)
        _check_finite_weights(weights)
        if self.registry is not None and not self.registry.claim(name, path):
            raise already  # another replica loaded one of that name meanwhile
        try:
            self._load(name, path, weights)
        except DitEngineError as err:
            if self.registry is not None:
                self.registry.release(name)
            raise BadRequestError(str(err)) from None

    def unload(self, name: str) -> bool:
        """Unload ``name``; False when no LoRA of that name is loaded."""
        self.sync()
        if self.registry is not None:
            self.registry.release(name)
        with self.pipe_lock:
            if self.paths.pop(name, None) is None:
                return False
            self.runner.unload_lora(name)
            return True

    def sync(self) -> None:
        """Under ``serve.replicas=N``: load the LoRAs other replicas loaded and unload those they
        unloaded (a file that no longer loads is left out, and said in the log). Nothing otherwise."""
        if self.registry is None:
            return
        wanted = self.registry.wanted()
        for name in [name for name in self.paths if name not in wanted]:
            with self.pipe_lock:
                if self.paths.pop(name, None) is not None:
                    self.runner.unload_lora(name)
        for name, path in wanted.items():
            if name not in self.paths and (name, path) not in self._unloadable:
                try:
                    self._load(name, path, self._file(path))
                except DitEngineError as err:
                    self._unloadable.add((name, path))
                    log.warning("lora %r (%s), loaded through another replica, does not load here: %s", name, path, err)

    def _load(self, name: str, path: str, weights: Path) -> None:
        with self.pipe_lock:
            self.runner.load_lora(name, str(weights))
            self.paths[name] = path

    def _file(self, path: str) -> Path:
        """The ``.safetensors`` file ``path`` names (or the first in the folder it names), symlinks
        resolved, when it lies inside ``serve.lora_dirs`` and is readable; else BadRequestError
        with the one message :data:`LORA_REFUSED`."""

        def allowed(candidate: Path) -> bool:
            return any(candidate.is_relative_to(folder) for folder in self.dirs)

        try:
            resolved = Path(os.path.expanduser(path)).resolve()
            if allowed(resolved) and resolved.is_dir():  # nothing outside is looked into
                resolved = next(iter(sorted(resolved.glob("*.safetensors"))), resolved).resolve()
            if allowed(resolved) and resolved.is_file() and os.access(resolved, os.R_OK):
                return resolved
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte in the path...
            pass
        raise BadRequestError(LORA_REFUSED)


def _check_finite_weights(path: Path) -> None:
    """LimitError when a tensor of the safetensors file at ``path`` holds NaN or Inf: such a LoRA
    turns every image it touches flat black (checked before the ranks are told to load it)."""
    bad = non_finite_weight_in_file(path)
    if bad is not None:
        raise LimitError(f"the LoRA's weight {bad} holds NaN or infinite values; it would make every image "
                         "black: re-export it from a good checkpoint")
