"""DiT (class-conditional) adapter (diffusers ``DiTPipeline``)."""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.adapter import SINGLE_STREAM, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter


def dit_modulated_input(block: torch.nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """TeaCache's probe for DiT blocks: ``norm1(hidden, timestep, class_labels)`` (adaLN-Zero).

    The blocks get the raw (integer) timestep and the class labels, not an embedding, so the
    modulated input is computed as the block itself does."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    return block.norm1(hidden, kwargs["timestep"], kwargs["class_labels"], hidden_dtype=hidden.dtype)[0]


class DiTAdapter(DiffusersAdapter):
    """DiT (class-conditional, DiT-XL-2): one list of ``BasicTransformerBlock``s with
    adaLN-Zero over the image tokens, hidden positional (timestep and class labels as keywords), one
    tensor back. There is no text: prompts are ImageNet class ids, and the image size is the
    checkpoint's. CFG is batched (the label and the null label in one call).
    """

    name = "dit"
    default_pretrained = "facebook/DiT-XL-2-256"
    pipeline_classes = ("DiTPipeline",)
    block_specs = (BlockSpec("transformer_blocks", SINGLE_STREAM),)
    teacache_probe = staticmethod(dit_modulated_input)
    transformer_class = "DiTTransformer2DModel"
    cfg_mode = "batched"
    batch_inputs = (*DiffusersAdapter.batch_inputs, "class_labels")
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=16,
                             source="DiT-XL-2 256 defaults (no config.json at hand)")
    #: ImageNet ids: 207 golden retriever, 360 otter
    default_workload = WorkloadDefaults(prompts=["207", "360"], num_inference_steps=25, guidance_scale=4.0)

    def check(self, model_cfg: Any, workload: Any, dry_run: bool) -> list[str]:
        problems = super().check(model_cfg, workload, dry_run)
        bad = [p for p in workload.prompts if not (str(p).strip().isdigit() and int(p) < 1000)]
        if bad:
            problems.append(f"model=dit takes ImageNet class ids 0-999 as prompts, got '{bad[0]}'; e.g. workload.prompts=[207,360]")
        for key in ("height", "width"):
            if getattr(workload, key) is not None:
                problems.append(f"workload.{key}: DiT generates at its checkpoint's size; set workload.{key}=null")
        return problems

    def call_kwargs(self, prompts, steps, guidance, height, width) -> dict[str, Any]:
        return {"class_labels": [int(p) for p in prompts], "num_inference_steps": steps, "guidance_scale": guidance}
