"""``quant=``: torchao weight (and activation) quantization of the transformer's linear layers.

Applied to the loaded pipeline with torchao's ``quantize_`` (the library made for it), before
every other stage: caches, calibrators and context parallelism then run on the quantized model
unchanged. Which layers: by default the linear layers inside the adapter's block lists except
the modulation layers of their norms (so not the embeddings, norms or the final projection, which
hold little compute and much of the quality); ``quant.targets`` / ``quant.exclude`` are globs over module names in the transformer
(``transformer_blocks.*.attn.to_q``). ``quant.text_encoder=true`` quantizes the text encoders'
linear layers too. Quantized weights cannot be put back: ``remove()`` refuses and says to reload.

Schemes and where they run (torchao 0.18, torch 2.13):

=================== ============================================== ===========================
scheme              torchao config                                 devices
=================== ============================================== ===========================
int8_weight_only    Int8WeightOnlyConfig                           CPU, CUDA
int8_dynamic        Int8DynamicActivationInt8WeightConfig          CPU, CUDA
fp8_weight_only     Float8WeightOnlyConfig                         CPU, CUDA
fp8_dynamic         Float8DynamicActivationFloat8WeightConfig      CUDA, compute capability >= 8.9
                    (``quant.granularity``: per_row or per_tensor)
int4_weight_only    Int4WeightOnlyConfig                           CUDA (needs the mslk package)
intx_weight_only    IntxWeightOnlyConfig (``quant.bits``: 1-8)     CPU, CUDA
=================== ============================================== ===========================
"""

from __future__ import annotations

import fnmatch
import importlib.util
from typing import Any

import torch

from dit_engine.adapter import ModelInfo
from dit_engine.errors import DitEngineError
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, Lifecycle, PlanContext, Transform
from dit_engine.quant.config import QuantConfig, Scheme, Granularity  # noqa: F401 - the schema, torch-free (re-exported)


CPU_SCHEMES = ("int8_weight_only", "int8_dynamic", "fp8_weight_only", "intx_weight_only")


def scheme_problem(config: QuantConfig, device: torch.device) -> str | None:
    """Why ``config.scheme`` cannot run on ``device`` (None when it can)."""
    runnable = list(CPU_SCHEMES)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        runnable = list(CPU_SCHEMES) + (["fp8_dynamic"] if (major, minor) >= (8, 9) else [])
        if importlib.util.find_spec("mslk") is not None:
            runnable.append("int4_weight_only")
    if config.scheme in runnable:
        return None
    why = {
        "fp8_dynamic": "needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper)",
        "int4_weight_only": "needs a CUDA GPU and the mslk package (no CPU layout)",
    }.get(config.scheme, "does not run here")
    return f"quant.scheme={config.scheme} {why}; on this {device.type} device use one of {', '.join(runnable)}"


def torchao_config(config: QuantConfig) -> Any:
    from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig,
                                      Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig,
                                      Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerRow, PerTensor)

    if config.scheme == "fp8_dynamic":
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow() if config.granularity == "per_row" else PerTensor())
    if config.scheme == "intx_weight_only":
        return IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{config.bits}"))
    return {
        "int8_weight_only": Int8WeightOnlyConfig,
        "int8_dynamic": Int8DynamicActivationInt8WeightConfig,
        "fp8_weight_only": Float8WeightOnlyConfig,
        "int4_weight_only": Int4WeightOnlyConfig,
    }[config.scheme]()


def _weight_bytes(module: torch.nn.Module) -> int:
    total = 0
    for parameter in module.parameters():
        data = parameter.data if not hasattr(parameter, "__tensor_flatten__") else parameter
        names, _ = data.__tensor_flatten__() if hasattr(data, "__tensor_flatten__") else ([], None)
        parts = [getattr(data, n) for n in names] if names else [data]
        total += sum(p.numel() * p.element_size() for p in parts if isinstance(p, torch.Tensor))
    return total


class QuantTransform(Transform):
    """Quantizes the chosen linear layers of every transformer (and text encoder) in place."""

    name = "quantize.torchao"
    stage = Stage.QUANTIZE
    config_class = QuantConfig
    lifecycle = Lifecycle(reversible=False)

    @classmethod
    def check(cls, config: QuantConfig, context: PlanContext) -> list[str]:
        problems = []
        if importlib.util.find_spec("torchao") is None:
            return ["quant= needs torchao: pip install 'dit_engine[quant]' (torchao==0.18.0)"]
        if not 1 <= config.bits <= 8:
            problems.append(f"quant.bits={config.bits}: intx_weight_only takes 1 to 8 bits")
        device = context.device
        if device is not None:
            problem = scheme_problem(config, device)
            if problem:
                problems.append(problem)
        return problems

    @classmethod
    def describe(cls, config: QuantConfig, model_info: ModelInfo) -> str:
        detail = {"fp8_dynamic": f" ({config.granularity})", "intx_weight_only": f" ({config.bits} bits)"}.get(config.scheme, "")
        where = ", ".join(config.targets) if config.targets else "linear layers of the block lists"
        extra = f", except {', '.join(config.exclude)}" if config.exclude else ""
        text = "; text encoders too" if config.text_encoder else ""
        return f"torchao {config.scheme}{detail} on {where}{extra}{text}; irreversible"

    def _selected(self, transformer: torch.nn.Module, adapter: Any) -> list[str]:
        targets = self.config.targets or [f"{spec.path}.*" for spec in adapter.block_specs]
        chosen = []
        for name, module in transformer.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            if any(fnmatch.fnmatch(name, g) for g in targets) and not any(fnmatch.fnmatch(name, g) for g in self.config.exclude):
                chosen.append(name)
        return chosen

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        from torchao.quantization import quantize_

        scheme = torchao_config(self.config)
        self.layers = 0
        self.bytes_before = self.bytes_after = 0
        modules = []
        for name, transformer in context.transformers.items():
            chosen = set(self._selected(transformer, context.adapter))
            if not chosen:
                linear = [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)][:3]
                raise DitEngineError(f"quant.targets={self.config.targets} and quant.exclude={self.config.exclude} match no linear "
                                     f"layer of {name}; its layers are named like {', '.join(linear)}")
            modules.append((transformer, chosen))
        if self.config.text_encoder:
            for attr in ("text_encoder", "text_encoder_2", "text_encoder_3"):
                encoder = getattr(pipe, attr, None)
                if isinstance(encoder, torch.nn.Module):
                    modules.append((encoder, {n for n, m in encoder.named_modules() if isinstance(m, torch.nn.Linear)}))
        for module, chosen in modules:
            layers = [m for n, m in module.named_modules() if n in chosen]
            self.bytes_before += sum(_weight_bytes(m) for m in layers)
            quantize_(module, scheme, filter_fn=lambda _m, fqn, chosen=chosen: fqn in chosen)
            self.layers += len(chosen)
            self.bytes_after += sum(_weight_bytes(m) for m in layers)

    def remove(self, pipe: Any) -> None:
        pass  # irreversible: Handle.remove() refuses before it gets here

    def stats(self) -> dict[str, Any]:
        # bytes of the quantized layers' parameters (weights, scales, biases) before and after
        return {"scheme": self.config.scheme, "layers": self.layers,
                "weight_bytes_before": self.bytes_before, "weight_bytes_after": self.bytes_after}
