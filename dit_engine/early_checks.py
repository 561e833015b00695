"""The checks a composed config alone decides, run before torch is imported.

A config mistake (an unknown key, a value out of range, a prompt the embedded model does not know)
should answer as fast as a typo in an option name: composing is torch-free (every built-in
technique's schema sits in a torch-free module, :data:`dit_engine.registry.SCHEMA_GROUP`), and so
are these checks. What needs the model's files or code (block counts, a family's thresholds, its
sizes) is checked by the plan, after them; these run again there, so nothing depends on the CLI
having called them.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf

from dit_engine.config.groups import technique_groups
from dit_engine.config.schema import EMBEDDED_PROMPTS
from dit_engine.config.validate import config_problems
from dit_engine.errors import RegistryError
from dit_engine.registry import Registry
from dit_engine.workload import class_model_problems, workload_config_problems


@runtime_checkable
class ChecksValues(Protocol):
    """A technique's config that can say, alone, which of its values no model accepts."""

    def value_problems(self) -> list[str]: ...


def early_problems(cfg: DictConfig, registry: Registry | None = None, loads_model: bool = True) -> list[str]:
    """Every problem the composed ``cfg`` alone decides, each a one-line fix (see the module doc).
    ``loads_model=False``: the caller brings its own pipeline (:func:`dit_engine.apply`), so the
    ``model`` group's choice, and the embedded model's limits, do not apply."""
    registry = registry or Registry(cfg.get("blocked") or ())
    problems = config_problems(cfg, registry)
    if problems:  # the rest would trip over the same keys
        return problems
    problems = workload_config_problems(cfg.workload)
    if problems:  # the checks below would trip over them
        return problems
    return technique_value_problems(cfg, registry) + (embedded_model_problems(cfg) if loads_model else [])


def technique_value_problems(cfg: DictConfig, registry: Registry) -> list[str]:
    """:meth:`ChecksValues.value_problems` of every chosen technique whose config has it."""
    problems = []
    for group in technique_groups():
        node = cfg.get(group.name)
        name = node.get("name") if isinstance(node, DictConfig) else None
        if name in (None, "none"):
            continue
        try:
            schema = registry.config_class(f"{group.prefix}.{name}")
        except RegistryError:
            continue  # the plan says which entry point is missing, in its own words
        if schema is None or not issubclass(schema, ChecksValues):
            continue
        config: Any = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
        problems += config.value_problems()
    return problems


def embedded_model_problems(cfg: DictConfig) -> list[str]:
    """Prompts and sizes the embedded model (``model=tiny`` with its own weights) cannot make."""
    model = cfg.get("model")
    if not isinstance(model, DictConfig) or model.get("adapter") != "tiny" or model.get("pretrained") is not None:
        return []
    workload = cfg.workload
    prompts = OmegaConf.to_container(workload.prompts, resolve=True) if workload.prompts is not None else []
    return class_model_problems(prompts, workload.height, workload.width, EMBEDDED_PROMPTS)
