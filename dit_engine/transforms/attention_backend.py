"""``attention=``: which attention kernel diffusers' attention dispatch runs (``native``, ``flash``,
``_flash_3_hub``, ``sage``, ``_native_cudnn``, ...), set on every transformer for the run.

Availability is checked at plan time, before any weight loads: the backend must be one diffusers
knows, its package must be installed (diffusers' own requirement check) and its device must be
there (every backend but ``native``, ``_native_math`` and ``flex`` needs CUDA). Context
parallelism swaps ``F.scaled_dot_product_attention`` inside the attention modules, so under
``parallel=`` with a sequence degree only the SDPA backends (``native``, ``_native_math``) are
accepted. ``remove()`` puts back each attention processor's previous backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from diffusers.models.attention_dispatch import AttentionBackendName

from dit_engine.adapter import ModelInfo, attention_modules
from dit_engine.errors import DitEngineError
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, PlanContext, Transform

CPU_BACKENDS = ("native", "_native_math", "flex")
SDPA_BACKENDS = ("native", "_native_math")  # the ones context parallelism can intercept


#: ``attention.backend``: every value of diffusers' ``AttentionBackendName``, named by its value
#: (``flash``, ``_native_cudnn``: what a config spells; diffusers' own member names are upper case).
Backend = enum.StrEnum("Backend", {b.value: b.value for b in AttentionBackendName})


@dataclass
class AttentionBackendConfig:
    """``attention=``: diffusers' attention dispatch backend.

    Attributes:
        name: transform implementation (``attention_backend``).
        backend: a diffusers ``AttentionBackendName`` value (``native``, ``flash``, ``sage``, ...).
    """

    name: str = "attention_backend"
    backend: Backend = Backend.native


class AttentionBackendTransform(Transform):
    """Sets diffusers' attention backend on every transformer; remove() restores each processor's."""

    name = "adapt.attention_backend"
    stage = Stage.ADAPT
    config_class = AttentionBackendConfig

    @classmethod
    def check(cls, config: AttentionBackendConfig, context: PlanContext) -> list[str]:
        from diffusers.models.attention_dispatch import _check_attention_backend_requirements

        try:
            _check_attention_backend_requirements(AttentionBackendName(config.backend))
        except (RuntimeError, ImportError) as err:
            return [f"attention.backend={config.backend} is not available here: {str(err).splitlines()[0]}"]
        problems = []
        device = context.device
        if device is not None and device.type == "cpu" and config.backend not in CPU_BACKENDS:
            problems.append(f"attention.backend={config.backend} needs a CUDA GPU; on the CPU use one of {', '.join(CPU_BACKENDS)}")
        return problems

    @classmethod
    def describe(cls, config: AttentionBackendConfig, model_info: ModelInfo) -> str:
        return f"diffusers attention backend {config.backend} on every attention module"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        backend = AttentionBackendName(self.config.backend)
        self.previous = []
        for transformer in context.transformers.values():
            for _name, module in attention_modules(transformer):
                if not hasattr(getattr(module, "processor", None), "_attention_backend"):
                    continue  # a processor outside diffusers' attention dispatch
                self.previous.append((module.processor, module.processor._attention_backend))
                module.processor._attention_backend = backend
        if not self.previous:
            raise DitEngineError("this transformer's attention does not go through diffusers' attention dispatch; drop attention=")

    def remove(self, pipe: Any) -> None:
        for processor, backend in self.previous:
            processor._attention_backend = backend
        self.previous = []

    def stats(self) -> dict[str, Any]:
        return {"backend": self.config.backend, "modules": len(self.previous)}
