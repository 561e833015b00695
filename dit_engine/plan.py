"""The plan: an ordered, validated, immutable list of transforms compiled from a composed config.

The stage order is :class:`~dit_engine.config.groups.Stage` (with the reason for each boundary);
which group runs at which stage is the table of groups (:mod:`dit_engine.config.groups`).

``compile_plan`` is the one place that reads the raw composed config: it resolves every chosen
option into its typed config, builds the validated parallel degrees once
(:class:`~dit_engine.parallel_dims.ParallelDims`), runs every transform's own ``check`` on those
typed facts, then the relations between groups (:mod:`dit_engine.relations`), before any weight
is loaded, and raises :class:`~dit_engine.errors.PlanError` listing every problem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dit_engine.adapter import Adapter, ModelInfo
from dit_engine.config.groups import Stage, stage_order, technique_groups
from dit_engine.config.schema import LoraConfig
from dit_engine.devices import planned_device
from dit_engine.errors import PlanError
from dit_engine.parallel_dims import ParallelDims
from dit_engine.registry import Provider, Registry
from dit_engine.relations import PlanFacts, relation_problems
from dit_engine.transforms.base import PlanContext
from dit_engine.transforms.protocols import (AdjustsConfig, CompletesConfig, Describes, HasFamilyDefaults, LoadTime,
                                             ReversibleByConfig)

#: Transforms every plan contains, whatever the config (entry-point names).
ALWAYS = ("adapt.step_state",)

__all__ = ["ALWAYS", "Plan", "PlanContext", "PlanStep", "Stage", "compile_plan"]


@dataclass(frozen=True)
class PlanStep:
    """One transform in the plan, with the config group it came from and who provided it."""

    stage: Stage
    name: str
    transform_class: type
    config: Any
    group: str | None
    provider: Provider

    def new_transform(self):
        """A fresh transform instance for this step (each application owns its state)."""
        return self.transform_class(self.config)

    @property
    def reversible(self) -> bool:
        """Whether ``remove`` restores the pipeline with this step's config."""
        if isinstance(self.transform_class, ReversibleByConfig):
            return self.transform_class.is_reversible(self.config)
        return self.transform_class.lifecycle.reversible

    def description(self, model_info: ModelInfo) -> str:
        """The step's line in ``Plan.explain()`` (its name when the transform has no description)."""
        if isinstance(self.transform_class, Describes):
            return self.transform_class.describe(self.config, model_info)
        return self.transform_class.name


@dataclass(frozen=True)
class Plan:
    """An immutable, ordered list of plan steps for one model, with its parallel degrees."""

    steps: tuple[PlanStep, ...]
    adapter: Adapter
    model_info: ModelInfo
    dims: ParallelDims = ParallelDims()

    @property
    def world_size(self) -> int:
        """Ranks the plan runs on (the product of its parallel degrees)."""
        return self.dims.world

    def explain(self) -> str:
        """A human-readable account of the plan (written as ``plan.txt`` in every run)."""
        info = self.model_info
        blocks = ", ".join(f"{path}[{n}]" for path, n in info.blocks.items())
        provider = self.adapter.provider
        lines = [
            f"dit_engine plan: adapter '{self.adapter.name}'"
            + (f" ({provider.distribution} {provider.version})" if provider else ""),
            f"  model: {info.total_blocks} blocks ({blocks}), {info.num_heads} heads; facts from {info.source}",
            *(f"  {line}" for line in self.adapter.describe()),
            f"  world size: {self.world_size}",
            "  steps, in application order:",
        ]
        for index, step in enumerate(self.steps, 1):
            origin = f"group {step.group}" if step.group else "always"
            lifecycle = "".join(flag for flag, on in (("; at load time", isinstance(step.transform_class, LoadTime)),
                                                      ("; irreversible", not step.transform_class.lifecycle.reversible)) if on)
            lines.append(
                f"  {index}. {step.stage.name:<9} {step.name:<18} {step.description(info)}"
                f"  [{origin}; {step.provider.distribution} {step.provider.version}{lifecycle}]"
            )
        lines.append("  stage order: " + " < ".join(stage.name for stage in stage_order()))
        return "\n".join(lines) + "\n"

    def config_of(self, group: str) -> Any:
        """The typed config of the step chosen in ``group``; None when the group adds no step."""
        return next((step.config for step in self.steps if step.group == group), None)

    def irreversible_steps(self) -> list[PlanStep]:
        """Steps whose ``remove`` cannot restore the pipeline (quantize, shard, compile)."""
        return [step for step in self.steps if not step.reversible]

    def load_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` arguments of the load-time steps, merged in plan order; two steps
        setting one argument is a plan error, caught at compile time."""
        merged: dict[str, Any] = {}
        for step in self.steps:
            if isinstance(step.transform_class, LoadTime):
                merged.update(step.transform_class.load_kwargs(step.config))
        return merged

    @property
    def places_pipeline(self) -> bool:
        """Whether a step places the modules on devices itself (offload), instead of the session."""
        return any(step.transform_class.lifecycle.places_pipeline for step in self.steps)

    def with_workload_steps(self, num_inference_steps: int) -> "Plan":
        """This plan with every step config that counts denoising steps and left the count to the
        workload (``num_inference_steps=None``) given the workload's count: a new plan, this one
        is unchanged."""
        steps = tuple(
            replace(step, config=replace(step.config, num_inference_steps=num_inference_steps))
            if counts_steps(step.config) and step.config.num_inference_steps is None else step
            for step in self.steps
        )
        return replace(self, steps=steps)

    def as_dict(self) -> list[dict[str, Any]]:
        """The plan as JSON-serialisable data (for metrics.json)."""
        return [
            {
                "stage": step.stage.name,
                "name": step.name,
                "group": step.group,
                "config": (OmegaConf.to_container(OmegaConf.structured(step.config), enum_to_str=True)
                           if step.config is not None else None),
                "provider": step.provider.as_dict(),
            }
            for step in self.steps
        ]


def counts_steps(config: Any) -> bool:
    """Whether a step config has a ``num_inference_steps`` setting (calibration-style caches that
    must know the step count up front)."""
    return config is not None and "num_inference_steps" in {f.name for f in dataclasses.fields(config)}


def resolve_config(transform_class: type, node: Any, adapter: Adapter) -> Any:
    """The typed config of a step from its composed node, with ``None`` settings filled from the
    technique's family defaults (:class:`~dit_engine.transforms.protocols.HasFamilyDefaults`)."""
    if transform_class.config_class is None or node is None:
        return None
    values = OmegaConf.to_container(node, resolve=True)
    if isinstance(transform_class, HasFamilyDefaults):
        for key, default in transform_class.family_defaults(adapter).items():
            if values.get(key) is None:
                values[key] = default
    config = transform_class.config_class(**values)
    return transform_class.adjust_config(config, node) if isinstance(transform_class, AdjustsConfig) else config


def _rank_consistency_problems(steps: list[PlanStep], dims: ParallelDims) -> list[str]:
    if dims.world == 1:
        return []
    return [f"{step.group}={step.config.name} decides on each rank's own shard, so ranks would diverge under parallel=; use one "
            "of the engine's caches (dbcache, scm, teacache, ...) or parallel=none"
            for step in steps if not step.transform_class.lifecycle.rank_consistent]


def _load_time_conflicts(steps: list[PlanStep]) -> list[str]:
    owner: dict[str, str] = {}
    problems = []
    for step in steps:
        if not isinstance(step.transform_class, LoadTime):
            continue
        for key in step.transform_class.load_kwargs(step.config):
            if key in owner:
                problems.append(f"{owner[key]} and {step.name} both set from_pretrained's {key}; choose one of them")
            owner.setdefault(key, step.name)
    return problems


def _lora(cfg: DictConfig) -> LoraConfig:
    node = cfg.get("lora")
    return LoraConfig(**OmegaConf.to_container(node, resolve=True)) if node is not None else LoraConfig()


def compile_plan(cfg: DictConfig, registry: Registry, adapter: Adapter, model_info: ModelInfo) -> Plan:
    """Turn a composed config into a validated :class:`Plan`; raise PlanError on any problem.

    Only config and model facts are read: no weights are touched, so a dry run is instant.
    """
    wanted: list[tuple[str, Any, Any]] = [(name, None, None) for name in ALWAYS]
    for group in technique_groups():
        node = cfg[group.name]
        if node.name != "none":
            wanted.append((f"{group.prefix}.{node.name}", group, node))

    steps = []
    problems: list[str] = []
    for name, group, node in wanted:
        transform_class, provider = registry.transform_class(name)
        expected_stage = group.stage if group else transform_class.stage
        if transform_class.stage != expected_stage:
            problems.append(f"transform {name} declares stage {transform_class.stage.name} but group {group.name} runs at "
                            f"{expected_stage.name}")
        config = resolve_config(transform_class, node, adapter)
        if config is not None and isinstance(transform_class, CompletesConfig):
            config, incomplete = transform_class.complete_config(config, adapter, model_info, cfg)
            problems.extend(incomplete)
        steps.append(PlanStep(transform_class.stage, name, transform_class, config, group.name if group else None, provider))

    configs = {step.group: step.config for step in steps if step.group}
    dims = ParallelDims.from_config(configs.get("parallel"))
    context = PlanContext(adapter=adapter, model_info=model_info, dims=dims, device=planned_device(cfg), configs=configs)
    for step in steps:
        problems.extend(step.transform_class.check(step.config, context))
    problems.extend(_rank_consistency_problems(steps, dims))
    facts = PlanFacts(configs=configs, dims=dims, lora=_lora(cfg),
                      transform_classes={step.group: step.transform_class for step in steps if step.group})
    problems.extend(relation_problems(facts))
    problems.extend(_load_time_conflicts(steps))
    if problems:
        raise PlanError(problems)

    steps.sort(key=lambda step: step.stage)
    return Plan(steps=tuple(steps), adapter=adapter, model_info=model_info, dims=dims)
