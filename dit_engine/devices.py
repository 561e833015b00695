"""Device and dtype choice for ``model.device`` / ``model.dtype``."""

from __future__ import annotations

import torch

from dit_engine.errors import DitEngineError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; an unavailable CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DitEngineError(f"model.device={name} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DitEngineError(f"model.device={name} but no CUDA device is available; use model.device=cpu or auto")
    return device


def dtype_problem(name: str) -> str | None:
    if name not in DTYPES:
        return f"model.dtype={name} is not supported; use one of {', '.join(DTYPES)}"
    return None


def planned_device(config) -> torch.device | None:
    """The device a composed run config asks for (``model.device``), for plan-time checks; None
    when the config has no model or names no usable device (the session reports that itself)."""
    if config is None:
        return None
    try:
        return resolve_device(str(config.model.device))
    except DitEngineError:
        return None

