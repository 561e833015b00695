"""LoRA adapters on the pipeline's transformer, through diffusers' own loading (peft).

The CLI's ``lora.path`` / ``lora.scale`` load one adapter for a run; the server loads named
adapters (``POST /v1/loras``) and picks one per request. The engine's hooks sit on whole blocks,
so the LoRA layers peft puts inside them compose with every cache; cache state starts afresh at
each pipeline call, so switching adapters between calls leaves nothing stale.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any

from dit_engine.errors import DitEngineError

#: The largest LoRA scale accepted: adapters are trained for scale 1 and used from 0 to about 2;
#: far beyond, the LoRA's delta swamps the weights and the outputs overflow to NaN.
MAX_LORA_SCALE = 100.0


def lora_problems(cfg: Any) -> list[str]:
    """Plan-time problems of ``lora.*`` (the file, the scale), each a one-line fix."""
    lora = cfg.get("lora")
    if lora is None or lora.path is None:
        return []
    problems = []
    path = Path(os.path.expanduser(lora.path))
    if not path.exists():
        problems.append(f"lora.path={lora.path} does not exist; give a .safetensors file (or a folder holding one)")
    if not 0 <= lora.scale <= MAX_LORA_SCALE:  # NaN and Inf too
        problems.append(f"lora.scale={lora.scale} must be from 0 to {MAX_LORA_SCALE:g} (1 is the adapter as trained)")
    return problems  # with quant=, compile= and tensor parallelism: dit_engine.relations


def first_non_finite(tensors: Iterable[tuple[str, Any]]) -> str | None:
    """The key of the first floating-point tensor holding NaN or Inf (None: all finite)."""
    import torch

    return next((key for key, value in tensors if value.is_floating_point() and not torch.isfinite(value).all()), None)


def non_finite_weight_in_file(path: Path) -> str | None:
    """:func:`first_non_finite` of a safetensors file, read one tensor at a time (None also for a
    file that is not safetensors: loading says so in its own words)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            return first_non_finite((key, weights.get_tensor(key)) for key in weights.keys())
    except Exception:  # noqa: BLE001 - not a readable safetensors file
        return None


def _state_dict(path: Path) -> dict:
    from safetensors.torch import load_file

    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise DitEngineError(f"{path} holds no .safetensors file; give the LoRA's weights file")
        path = files[0]
    try:
        state = load_file(str(path))
    except Exception as err:  # not a safetensors file, truncated...
        raise DitEngineError(f"{path} is not a readable safetensors file ({str(err).splitlines()[0]})") from None
    # NaN / Inf weights make every image NaN (flat black): refuse the file before it is used
    bad = first_non_finite(state.items())
    if bad is not None:
        raise DitEngineError(f"LoRA {path} holds NaN or infinite weights ({bad}); the file is damaged or was saved "
                             "from a diverged training run: use another checkpoint")
    return state


def load_lora(transformer: Any, path: str, name: str) -> None:
    """Load the LoRA at ``path`` into ``transformer`` as adapter ``name`` (enabled, scale 1)."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise DitEngineError("LoRA needs peft: pip install peft") from None
    resolved = Path(os.path.expanduser(path))
    if not resolved.exists():
        raise DitEngineError(f"LoRA path {path} does not exist; give a .safetensors file (or a folder holding one)")
    state = _state_dict(resolved)
    prefix = "transformer" if any(key.startswith("transformer.") for key in state) else None
    try:
        transformer.load_lora_adapter(state, adapter_name=name, prefix=prefix)
    except Exception as err:
        raise DitEngineError(f"LoRA {path} does not fit {type(transformer).__name__}: {str(err).splitlines()[0]}") from None
    if name not in getattr(transformer, "peft_config", {}):
        raise DitEngineError(f"LoRA {path} holds no weights for {type(transformer).__name__}'s layers; is it for another model?")


def use_loras(transformer: Any, adapters: Sequence[tuple[str, float]]) -> None:
    """Run the next calls with ``adapters`` (``(name, scale)`` pairs, combined by diffusers'
    ``set_adapters``: their weighted deltas add up), or with none (an empty sequence)."""
    if not getattr(transformer, "peft_config", None):
        return
    if not adapters:
        transformer.disable_lora()
        return
    transformer.enable_lora()
    transformer.set_adapters([name for name, _ in adapters], [scale for _, scale in adapters])


def unload_lora(transformer: Any, name: str) -> None:
    """Delete adapter ``name``: the transformer computes exactly as before it was loaded."""
    transformer.delete_adapters(name)
