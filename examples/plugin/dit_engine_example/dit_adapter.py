"""``model=example_dit``: an adapter for the plugin's ``ClassLabelDiTPipeline`` (DiT-XL-2 weights).

An adapter is mostly data: the pipeline classes it serves, where the block list lives, how a block
is called (one image stream, no text stream, returns one tensor), where the model facts are in
``config.json``, and what a default workload is. Prompts are ImageNet class ids.
"""

from __future__ import annotations

from typing import Any

from dit_engine.adapter import BlockPattern, BlockSpec, ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter

#: BasicTransformerBlock in DiT: ``hidden_states`` only (class labels and timestep as keywords),
#: returns the hidden states.
DIT_BLOCK = BlockPattern(name="single(hidden)", encoder=None, returns=("hidden",))


class ExampleDiTAdapter(DiffusersAdapter):
    """DiT-XL-2 through the plugin's ``ClassLabelDiTPipeline``: one list of single-stream blocks,
    batched CFG (one transformer call per step)."""

    name = "example_dit"
    pipeline_classes = ("ClassLabelDiTPipeline",)
    block_specs = (BlockSpec("transformer_blocks", DIT_BLOCK),)
    block_count_keys = {"transformer_blocks": "num_layers"}
    default_info = ModelInfo(blocks={"transformer_blocks": 28}, num_heads=16, source="DiT-XL-2 defaults (no config.json at hand)")

    def check(self, model_cfg: Any, workload: Any, dry_run: bool) -> list[str]:
        problems = super().check(model_cfg, workload, dry_run)
        bad = [p for p in workload.prompts if not (p.strip().isdigit() and int(p) < 1000)]
        if bad:
            problems.append(f"model=example_dit takes ImageNet class ids 0-999 as prompts, got '{bad[0]}'; e.g. workload.prompts=[207,360]")
        return problems

    def workload_defaults(self) -> WorkloadDefaults:
        return WorkloadDefaults(prompts=["207", "360"], num_inference_steps=25, guidance_scale=4.0)

    def call_kwargs(self, prompts, steps, guidance, height, width) -> dict[str, Any]:
        # DiT generates at its trained size: no height / width; the pipeline maps class ids.
        return {"prompt": list(prompts), "num_inference_steps": steps, "guidance_scale": guidance}

    def pipeline_class(self, model_cfg: Any) -> type:
        from dit_engine_example.pipeline import ClassLabelDiTPipeline

        return ClassLabelDiTPipeline

    def load(self, model_cfg: Any, dtype, load_kwargs: dict[str, Any]):
        # Any DiTPipeline directory (DiT-XL-2-256, or one this plugin saved) loads as the subclass.
        import os

        return self.pipeline_class(model_cfg).from_pretrained(os.path.expanduser(model_cfg.pretrained), dtype=dtype, **load_kwargs)
