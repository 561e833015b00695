"""The plan: an ordered, validated list of transforms compiled from a composed config.

Stage order is fixed here, once, with the reason for each boundary:

* ``QUANTIZE`` first, so sharding and every hook see the final linear layer types;
* ``SHARD`` before caching, so cache hooks see local shapes and can agree across ranks;
* ``ADAPT`` (engine-owned step state, block views) before anything that hooks blocks by step;
* ``CACHE`` before ``CALIBRATE``: a calibrator binds to the cache that is installed;
* ``COMPILE`` after every module-graph change, so it traces the final graph;
* ``OFFLOAD`` last: it moves the finished modules, it must not be traced or hooked around.

``compile_plan`` runs every transform's ``check`` and the cross-group checks before any weight is
loaded and raises :class:`~dit_engine.errors.PlanError` listing every problem.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dit_engine.adapter import Adapter, ModelInfo
from dit_engine.errors import PlanError
from dit_engine.registry import Provider, Registry


class Stage(enum.IntEnum):
    """When a transform is applied; lower values first (see the module docstring for why)."""

    QUANTIZE = 10
    SHARD = 20
    ADAPT = 30
    CACHE = 40
    CALIBRATE = 50
    COMPILE = 60
    OFFLOAD = 70


#: Config group -> the stage its transform belongs to.
GROUP_STAGES: dict[str, Stage] = {
    "quant": Stage.QUANTIZE,
    "parallel": Stage.SHARD,
    "cache": Stage.CACHE,
    "calibrator": Stage.CALIBRATE,
    "compile": Stage.COMPILE,
    "attention": Stage.ADAPT,
    "offload": Stage.OFFLOAD,
}

def entry_point_prefix(stage: Stage) -> str:
    """Entry-point names are ``<stage>.<impl>``: ``calibrator=taylorseer`` -> ``calibrate.taylorseer``."""
    return stage.name.lower()


#: Transforms every plan contains, whatever the config (entry-point names).
ALWAYS = ("adapt.step_state",)


@dataclass(frozen=True)
class PlanContext:
    """What a transform's ``check`` may look at: config and model facts, never weights."""

    adapter: Adapter
    model_info: ModelInfo
    world_size: int
    config: DictConfig


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


@dataclass(frozen=True)
class Plan:
    """An immutable, ordered list of plan steps for one model."""

    steps: tuple[PlanStep, ...]
    adapter: Adapter
    model_info: ModelInfo
    world_size: int = 1

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
            lifecycle = "".join(
                flag for flag, on in (("; at load time", step.transform_class.acts == "load_time"),
                                      ("; irreversible", not step.transform_class.reversible)) if on
            )
            lines.append(
                f"  {index}. {step.stage.name:<9} {step.name:<18} {step.transform_class.describe(step.config, info)}"
                f"  [{origin}; {step.provider.distribution} {step.provider.version}{lifecycle}]"
            )
        lines.append("  stage order: " + " < ".join(stage.name for stage in Stage))
        return "\n".join(lines) + "\n"

    def irreversible_steps(self) -> list[PlanStep]:
        """Steps whose ``remove`` cannot restore the pipeline (quantize, shard, compile)."""
        return [step for step in self.steps if not step.transform_class.is_reversible(step.config)]

    def load_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` arguments of the load-time steps, merged in plan order; two steps
        setting one argument is a plan error, caught at compile time."""
        merged: dict[str, Any] = {}
        for step in self.steps:
            if step.transform_class.acts == "load_time":
                merged.update(step.transform_class.load_kwargs(step.config))
        return merged

    @property
    def places_pipeline(self) -> bool:
        """Whether a step places the modules on devices itself (offload), instead of the session."""
        return any(step.transform_class.places_pipeline for step in self.steps)

    def as_dict(self) -> list[dict[str, Any]]:
        """The plan as JSON-serialisable data (for metrics.json)."""
        return [
            {
                "stage": step.stage.name,
                "name": step.name,
                "group": step.group,
                "config": OmegaConf.to_container(OmegaConf.structured(step.config)) if step.config is not None else None,
                "provider": step.provider.as_dict(),
            }
            for step in self.steps
        ]


def parallel_world_size(cfg: DictConfig) -> int:
    """Ranks the ``parallel`` group asks for: the product of its degrees (1 without it)."""
    node = cfg.get("parallel")
    world = 1
    for key in ("ulysses_degree", "ring_degree", "cfg_degree", "tp_degree"):
        value = node.get(key, 1) if node is not None else 1
        world *= value if isinstance(value, int) and value > 0 else 1
    return world


def _cross_group_problems(cfg: DictConfig, steps: list[PlanStep], world_size: int) -> list[str]:
    problems = []
    if world_size > 1:
        for step in steps:
            if not step.transform_class.rank_consistent:
                problems.append(f"{step.group}={cfg[step.group].name} decides on each rank's own shard, so ranks would diverge under "
                                "parallel=; use one of the engine's caches (dbcache, scm, teacache, ...) or parallel=none")
    if cfg.calibrator.name != "none":
        cache = next((step for step in steps if step.group == "cache"), None)
        if cache is None:
            problems.append(f"calibrator={cfg.calibrator.name} needs a cache to calibrate; add cache=dbcache (or another cache)")
        elif not hasattr(cache.transform_class, "bind_forecaster"):  # not a transforms.base.ForecastTarget
            problems.append(
                f"calibrator={cfg.calibrator.name} cannot bind to {cache.name}: it keeps no residual to forecast; "
                "use cache=dbcache, fbcache or scm, or calibrator=none"
            )
    return problems


def _load_time_conflicts(steps: list[PlanStep]) -> list[str]:
    owner: dict[str, str] = {}
    problems = []
    for step in steps:
        if step.transform_class.acts != "load_time":
            continue
        for key in step.transform_class.load_kwargs(step.config):
            if key in owner:
                problems.append(f"{owner[key]} and {step.name} both set from_pretrained's {key}; choose one of them")
            owner.setdefault(key, step.name)
    return problems


def compile_plan(cfg: DictConfig, registry: Registry, adapter: Adapter, model_info: ModelInfo) -> Plan:
    """Turn a composed config into a validated :class:`Plan`; raise PlanError on any problem.

    Only config and model facts are read: no weights are touched, so a dry run is instant.
    """
    world_size = parallel_world_size(cfg)
    wanted: list[tuple[str, str | None, Any]] = [(name, None, None) for name in ALWAYS]
    for group, stage in GROUP_STAGES.items():
        node = cfg[group]
        if node.name != "none":
            wanted.append((f"{entry_point_prefix(stage)}.{node.name}", group, node))

    steps = []
    problems: list[str] = []
    for name, group, node in wanted:
        transform_class, provider = registry.transform_class(name)
        expected_stage = GROUP_STAGES.get(group) if group else transform_class.stage
        if transform_class.stage != expected_stage:
            problems.append(f"transform {name} declares stage {transform_class.stage.name} but group {group} runs at {expected_stage.name}")
        config = transform_class.resolve_config(node, adapter)
        steps.append(PlanStep(transform_class.stage, name, transform_class, config, group, provider))

    context = PlanContext(adapter=adapter, model_info=model_info, world_size=world_size, config=cfg)
    for step in steps:
        problems.extend(step.transform_class.check(step.config, context))
    problems.extend(_cross_group_problems(cfg, steps, world_size))
    problems.extend(_load_time_conflicts(steps))
    if problems:
        raise PlanError(problems)

    steps.sort(key=lambda step: step.stage)
    return Plan(steps=tuple(steps), adapter=adapter, model_info=model_info, world_size=world_size)
