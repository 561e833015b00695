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
