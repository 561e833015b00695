"""Non-finite outputs are failures: a pipeline call whose values turn NaN or infinite fails.

NaN images convert to flat black PNGs without a word from diffusers (a ``RuntimeWarning`` from
numpy at most), so a run or a served request would look like a success. :class:`FiniteWatch`
watches one pipeline call from outside: a forward hook on each transformer records whether each
of its outputs is finite, and the VAE's ``decode`` is wrapped to check the final latents and the
decoded images. The flags stay on the device until the call ends, so the check adds no
synchronisation inside the denoising loop; :meth:`FiniteWatch.check` reads them once and raises
:class:`~dit_engine.errors.NonFiniteOutputError` naming the likely cause: where the values first
turned non-finite tells a LoRA's or checkpoint's weights (the first transformer call) from latents
that blew up between steps (the guidance scale) or in the decoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from dit_engine.errors import NonFiniteOutputError


def _float_tensors(value: Any) -> list[torch.Tensor]:
    """The floating-point tensors of a module's output (a tensor, a tuple, a diffusers output)."""
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _float_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _float_tensors(item)]
    if dataclasses.is_dataclass(value):  # diffusers' BaseOutput (e.g. Transformer2DModelOutput)
        return [t for f in dataclasses.fields(value) for t in _float_tensors(getattr(value, f.name))]
    return []


def _all_finite(value: Any) -> torch.Tensor | None:
    """A 0-d bool tensor (on the values' device, not synchronised): every value finite."""
    flags = [torch.isfinite(t).all() for t in _float_tensors(value)]
    if not flags:
        return None
    return flags[0] if len(flags) == 1 else torch.stack([f.to(flags[0].device) for f in flags]).all()


def _read(flags: list[torch.Tensor | None]) -> list[bool]:
    """The flags as booleans (None: nothing to check, so finite), read with one device-to-host
    copy when they share a device (one synchronisation per pipeline call, not one per step)."""
    present = [flag for flag in flags if flag is not None]
    if present and len({flag.device for flag in present}) == 1:
        values = iter(torch.stack(present).tolist())
    else:
        values = iter([bool(flag) for flag in present])
    return [True if flag is None else bool(next(values)) for flag in flags]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class FiniteWatch:
    """Watches one pipeline call for NaN / Inf (a context manager; see the module doc).

    Args:
        pipe: the pipeline about to be called.
        transformers: its DiTs (the adapter's ``transformers(pipe)``).
        guidance_scale: the call's guidance scale, named in the error as a likely cause.
    """

    def __init__(self, pipe: Any, transformers: dict[str, torch.nn.Module], guidance_scale: float | None):
        self.pipe = pipe
        self.transformers = transformers
        self.guidance_scale = guidance_scale
        self.calls: list[torch.Tensor | None] = []  # per transformer call: all outputs finite
        self.decoded: list[torch.Tensor | None] = []  # per decode: latents in and images out finite
        self._handles: list[Any] = []
        self._vae = None

    def __enter__(self) -> "FiniteWatch":
        for transformer in self.transformers.values():
            self._handles.append(transformer.register_forward_hook(self._on_transformer_output))
        vae = getattr(self.pipe, "vae", None)
        if vae is not None and callable(getattr(vae, "decode", None)) and "decode" not in vars(vae):
            original = vae.decode

            def decode(latents, *args, **kwargs):
                out = original(latents, *args, **kwargs)
                self.decoded.append(_all_finite((latents, out)))
                return out

            vae.decode = decode  # an instance attribute over the class's method, deleted on exit
            self._vae = vae
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._vae is not None:
            del self._vae.decode
            self._vae = None

    def _on_transformer_output(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        flag = _all_finite(output)
        self.calls.append(flag)
        # On the CPU reading the flag costs nothing: stop at once instead of denoising NaN (slow on
        # CPUs) to the end. Not across ranks: a NaN in one rank's shard would leave the others
        # waiting in a collective; they all stop together at the end of the call instead.
        if flag is not None and flag.device.type == "cpu" and not bool(flag) and not _distributed():
            raise NonFiniteOutputError(self._cause(_read(self.calls)))

    def check(self) -> None:
        """Raise NonFiniteOutputError when anything the call produced was NaN or infinite."""
        calls, decoded = _read(self.calls), _read(self.decoded)
        if all(calls) and all(decoded):
            return
        raise NonFiniteOutputError(self._cause(calls))

    def _lora(self) -> str | None:
        """The LoRA adapters active in the transformers, described (None when there are none)."""
        names = []
        for transformer in self.transformers.values():
            if getattr(transformer, "peft_config", None) and getattr(transformer, "_hf_peft_config_loaded", True):
                active = getattr(transformer, "active_adapters", None)
                try:
                    active = active() if callable(active) else active
                except Exception:  # noqa: BLE001 - peft raises when adapters are disabled
                    active = None
                names.extend(active or [])
        return ", ".join(sorted(set(names))) or None

    def _cause(self, calls: list[bool]) -> str:
        guidance = f"guidance_scale={self.guidance_scale:g}" if self.guidance_scale is not None else "the guidance scale"
        if calls and not calls[0]:
            lora = self._lora()
            if lora:
                return (f"the images are NaN/Inf: the transformer's very first output was not finite, so its weights are: "
                        f"the LoRA ({lora}) has non-finite weights or scale; check the LoRA file and its scale")
            return ("the images are NaN/Inf: the transformer's very first output was not finite, so its weights or this "
                    "dtype are: check model.pretrained's weights, or use model.dtype=bfloat16 or float32 (float16 overflows)")
        if not all(calls):
            good = calls.index(False)
            return (f"the images are NaN/Inf: the latents turned non-finite after {good} transformer call(s); "
                    f"the likely cause is {guidance} (too large) or a dtype overflow")
        return (f"the images are NaN/Inf: the final latents or the decoded images are not finite; the likely cause is "
                f"{guidance} (too large) or the VAE overflowing in this dtype")
