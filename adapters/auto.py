"""The automatic adapter (``model=auto``): serves a DiT pipeline no family adapter claims.

It finds each transformer's top-level block lists and infers how they are called from one traced
pipeline call (:mod:`dit_engine.block_inference`): two denoising steps of one prompt, latents out.
The plan and ``metrics.json`` name it ``auto`` and list what it inferred. What it cannot infer is
refused with the reason; a family adapter (docs/plugins.md) is then the way.

Left out on purpose: parallel plans (which attention modules are cross-attention is not
inferred; ``parallel=`` is refused), published TeaCache / MagCache calibrations (run
``cache=fit_signals``), and per-family workload settings.
"""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.adapter import ModelInfo, WorkloadDefaults
from dit_engine.diffusers_adapter import DiffusersAdapter, read_transformer_config
from dit_engine.errors import PlanError, UnsupportedPipelineError

#: Steps of the traced call: the first transformer call is what is read; two steps let a
#: scheduler that needs more than one step run.
TRACE_STEPS = 2


class AutoAdapter(DiffusersAdapter):
    """A DiT pipeline whose block lists and call patterns are inferred from one traced call."""

    name = "auto"
    pipeline_classes = ()
    cfg_mode = "unknown"
    default_workload = WorkloadDefaults(prompts=["A photo of a cat sitting on a windowsill"], num_inference_steps=28,
                                        guidance_scale=4.0)

    def __init__(self):
        self.inference: list = []
        self.transformer_attrs = ()
        self.block_specs = ()
        self.teacache_probe = None
        self.transformer_class = None

    def matches(self, pipe: Any) -> bool:
        from dit_engine.block_inference import transformer_attrs

        return bool(transformer_attrs(pipe))

    def context_parallel_plan(self):
        return None  # cross-attention modules are not inferred: parallel= is refused

    def tensor_parallel_plan(self):
        return None

    def trace_kwargs(self, workload: Any) -> dict[str, Any]:
        """The traced call's arguments: the workload's first prompt, :data:`TRACE_STEPS` steps, latents out."""
        kwargs = self.call_kwargs(workload.prompts[:1], TRACE_STEPS, workload.guidance_scale, workload.height, workload.width)
        kwargs.update(workload.call_kwargs)
        kwargs.update(num_inference_steps=TRACE_STEPS, output_type="latent",
                      generator=torch.Generator().manual_seed(workload.seed))
        return kwargs

    def trace(self, pipe: Any, call_kwargs: dict[str, Any]) -> None:
        """Infer the block lists from one call ``pipe(**call_kwargs)``; raise
        :class:`UnsupportedPipelineError` naming what could not be inferred."""
        from dit_engine.block_inference import infer, transformer_attrs

        pipeline = type(pipe).__name__
        classes = ", ".join(f"{a}: {type(getattr(pipe, a)).__name__}" for a in transformer_attrs(pipe)) or "none"
        try:
            self.inference = infer(pipe, call_kwargs)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UnsupportedPipelineError(
                f"no adapter serves {pipeline} ({classes}) and the automatic adapter's traced call failed: {first}; "
                "pass the arguments of a working call as apply(pipe, ..., example_call={...}) (or workload.call_kwargs), "
                "or write an adapter (docs/plugins.md)") from None
        usable = [t for t in self.inference if t.specs]
        if not usable:
            problems = "; ".join(p for t in self.inference for p in t.problems()) or "no transformer component"
            raise UnsupportedPipelineError(
                f"no adapter serves {pipeline} ({classes}) and the automatic adapter could not infer its blocks: {problems}; "
                "write an adapter for it (docs/plugins.md)")
        specs = {t.specs for t in usable}
        if len(specs) > 1:
            raise UnsupportedPipelineError(
                f"no adapter serves {pipeline} ({classes}) and its transformers have different block layouts, which "
                "the automatic adapter does not handle; write an adapter for it (docs/plugins.md)")
        self.transformer_attrs = tuple(t.attr for t in usable)
        self.block_specs = usable[0].specs
        self.teacache_probe = usable[0].probe
        self.transformer_class = usable[0].class_name

    def describe(self) -> list[str]:
        """What the trace inferred, one line per transformer and block list (plan.txt)."""
        if not self.inference:
            return ["block lists and call patterns: inferred at load by one traced call"]
        lines = []
        for t in self.inference:
            probe = f"teacache probe {t.probe.name}" if t.probe else "no timestep embedding input found (teacache refused)"
            calls = f", transformer calls per step: {t.calls_per_step:g}" if t.calls_per_step else ""
            lines.append(f"inferred for {t.attr} ({t.class_name}){calls}; {probe}:")
            lines += [f"  {item.describe()}" for item in t.lists]
        return lines

    def inferred(self) -> dict[str, Any]:
        """The inference as data (``metrics.json``)."""
        return {
            t.attr: {
                "class": t.class_name,
                "calls_per_step": t.calls_per_step,
                "teacache_probe": t.probe.name if t.probe else None,
                "lists": [{"path": i.path, "blocks": i.length, "pattern": i.pattern.name if i.pattern else None,
                           "hidden": i.pattern.hidden if i.pattern else None,
                           "encoder": i.pattern.encoder if i.pattern else None,
                           "returns": list(i.pattern.returns) if i.pattern else None,
                           "left_alone": i.reason} for i in t.lists],
            }
            for t in self.inference
        }

    def model_info(self, model_cfg: Any) -> ModelInfo:
        """Block lists and heads from ``transformer/config.json``, built on the meta device (no weights)."""
        if model_cfg.pretrained is None:
            raise PlanError(["model=auto needs weights to trace: set model.pretrained=<local pipeline directory or hub id>"])
        found = read_transformer_config(model_cfg.pretrained, model_cfg.get("revision"))
        if found is None:
            raise PlanError([
                f"model=auto reads the transformer's config before loading: model.pretrained={model_cfg.pretrained} has no "
                "transformer/config.json at hand (give a local pipeline directory or a hub id in the local cache)"])
        config, path = found
        import diffusers

        from dit_engine.block_inference import candidate_lists

        class_name = config.get("_class_name")
        cls = getattr(diffusers, class_name, None) if isinstance(class_name, str) else None
        if cls is None:
            raise PlanError([f"{path} names no diffusers model class (_class_name={class_name!r}); model=auto serves diffusers transformers"])
        try:
            with torch.device("meta"):
                transformer = cls.from_config(config)
        except Exception as err:
            raise PlanError([f"{path}: {class_name} could not be built from it ({err}); repair the model directory"]) from None
        lists = {name: len(blocks) for name, blocks in candidate_lists(transformer).items()}
        if not lists:
            raise PlanError([f"{class_name} ({path}) has no top-level list of attention blocks; model=auto cannot serve it"])
        heads = next((config[k] for k in ("num_attention_heads", "n_heads", "num_heads") if isinstance(config.get(k), int)), 0)
        return ModelInfo(blocks=lists, num_heads=heads, source=f"{path} (block lists before the traced call)")
