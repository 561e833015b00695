"""Adapter of the embedded default model (``model=tiny``): the FLUX-architecture digits DiT of ``dit_engine.digits``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dit_engine.errors import DitEngineError
from dit_engine.workload import class_model_problems
from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, Adapter, BlockSpec, ModelInfo, WorkloadDefaults, flux_modulated_input


def _weights_dir(model_cfg: Any) -> Path | None:
    return Path(os.path.expanduser(model_cfg.pretrained)) if model_cfg.pretrained else None


class TinyAdapter(Adapter):
    """The embedded digits model: ``TinyDiTPipeline`` around a small ``FluxTransformer2DModel``.

    Prompts are class names (``zero`` .. ``nine``, or the digits ``0`` .. ``9``).
    ``model.pretrained`` may point at a folder with a retrained ``tiny_dit.safetensors``/``.json``.
    """

    name = "tiny"
    pipeline_classes = ("TinyDiTPipeline",)
    block_specs = (
        BlockSpec("transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
        BlockSpec("single_transformer_blocks", DUAL_STREAM_ENCODER_FIRST),
    )
    teacache_probe = staticmethod(flux_modulated_input)
    transformer_class = "FluxTransformer2DModel"
    #: batched by default; ``separate_cfg=True`` (a pipeline argument) makes two calls per step
    cfg_mode = "batched"

    def _config(self, model_cfg: Any) -> tuple[dict, str]:
        from dit_engine.digits.model import CONFIG_FILE, load_digits_config

        folder = _weights_dir(model_cfg)
        path = folder / CONFIG_FILE.name if folder else CONFIG_FILE
        try:
            return load_digits_config(path), str(path)
        except FileNotFoundError as err:
            raise DitEngineError(str(err)) from None

    def model_info(self, model_cfg: Any) -> ModelInfo:
        config, path = self._config(model_cfg)
        transformer = config["transformer"]
        return ModelInfo(
            blocks={"transformer_blocks": transformer["num_layers"], "single_transformer_blocks": transformer["num_single_layers"]},
            num_heads=transformer["num_attention_heads"],
            source=path,
        )

    def check(self, model_cfg: Any, workload: Any, dry_run: bool) -> list[str]:
        from dit_engine.digits.model import CONFIG_FILE

        folder = _weights_dir(model_cfg)
        if folder is not None and not (folder / CONFIG_FILE.name).is_file():
            return [f"model.pretrained={model_cfg.pretrained} holds no {CONFIG_FILE.name}; point it at the --out folder of python -m dit_engine.digits.train, or drop it to use the embedded weights"]
        class_names = self._config(model_cfg)[0]["class_names"]
        return class_model_problems(workload.prompts, workload.height, workload.width, class_names)

    def pipeline_class(self, model_cfg: Any) -> type:
        from dit_engine.digits.pipeline import TinyDiTPipeline

        return TinyDiTPipeline

    def load(self, model_cfg: Any, dtype: torch.dtype, load_kwargs: dict[str, Any]) -> Any:
        from dit_engine.digits import load_digits_pipeline

        if load_kwargs:
            raise DitEngineError(f"the tiny model loads from its own safetensors and takes no load-time arguments ({', '.join(load_kwargs)})")
        return load_digits_pipeline(dtype=dtype, weights_dir=_weights_dir(model_cfg))

    def workload_defaults(self) -> WorkloadDefaults:
        from dit_engine.digits import CLASS_NAMES

        return WorkloadDefaults(prompts=list(CLASS_NAMES), num_inference_steps=28, guidance_scale=1.0)

    def cfg_calls(self, call_kwargs: dict[str, Any]) -> int:
        # Guidance above 1 runs the conditional and the null-class call separately.
        return 2 if call_kwargs.get("guidance_scale", 1.0) > 1 else 1

    def call_kwargs(self, prompts, steps, guidance, height, width) -> dict[str, Any]:
        # The tiny model has one trained size (16x16); height and width are not call arguments.
        return {"prompt": prompts, "num_inference_steps": steps, "guidance_scale": guidance}
