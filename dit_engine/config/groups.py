"""The table of config groups: the one place that says which groups exist and what each one is.

Every other list of groups is derived from :func:`config_groups`: the root config dataclass
(:func:`engine_config_class`), the schemas Hydra serves (:func:`engine_schemas`), the entry-point
prefix under which a group's transforms are registered, and the plan's stage lookup.

A group is either a *technique* group (it has a :class:`Stage`: choosing an option other than
``none`` adds that option's transform to the plan at that stage) or a *settings* group (model,
workload, report: read by the engine itself, no transform).

A plugin adds a group through the entry-point group ``dit_engine.groups``, whose object is a
:class:`ConfigGroup` (or a list of them)::

    [project.entry-points."dit_engine.groups"]
    sampler = "my_plugin.groups:SAMPLER"     # ConfigGroup("sampler", SamplerStage.SAMPLE, NoneSchema)

Its stage is any ``enum.IntEnum`` member: the value places it in the stage order, the lower-cased
name is the entry-point prefix of its transforms (``sampler=x`` -> transform ``sample.x``). Its
options are YAML files in the plugin's config folder (``dit_engine.conf`` entry point), and it must
ship ``<group>/none.yaml`` (the default every run composes).

This module is torch-free (``--help`` and shell completion read it), and so must be a plugin's
``dit_engine.groups`` module.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field, make_dataclass
from importlib.metadata import entry_points
from typing import Any, Optional

from omegaconf import MISSING

from dit_engine.config.schema import (LoraConfig, ModelConfig, NoCacheConfig, NoneConfig, ReportConfig, ServeConfig,
                                      WorkloadConfig)
from dit_engine.errors import RegistryError

#: Entry-point group through which plugins add config groups.
GROUP_ENTRY_POINTS = "dit_engine.groups"


class Stage(enum.IntEnum):
    """When a technique group's transform is applied; lower values first.

    The order, and why each boundary is where it is:

    * ``QUANTIZE`` first, so sharding and every hook see the final linear layer types;
    * ``SHARD`` before caching, so cache hooks see local shapes and can agree across ranks;
    * ``ADAPT`` (engine-owned step state, block views) before anything that hooks blocks by step;
    * ``CACHE`` before ``CALIBRATE``: a calibrator binds to the cache that is installed;
    * ``COMPILE`` after every module-graph change, so it traces the final graph;
    * ``OFFLOAD`` last: it moves the finished modules, it must not be traced or hooked around.
    """

    QUANTIZE = 10
    SHARD = 20
    ADAPT = 30
    CACHE = 40
    CALIBRATE = 50
    COMPILE = 60
    OFFLOAD = 70


@dataclass(frozen=True)
class ConfigGroup:
    """One config group.

    Attributes:
        name: the group's name on the command line (``cache`` in ``cache=dbcache``).
        stage: when its transform runs (technique groups); None for settings groups.
        schema: the dataclass of the group's built-in option: its ``none`` option for technique
            groups (served as ``<group>/schema_none``), the group's schema for settings groups
            (served as ``<group>/schema_<group>``).
        default: the option a run composes when none is chosen.
    """

    name: str
    stage: Optional[enum.IntEnum]
    schema: type = NoneConfig
    default: str = "none"

    @property
    def prefix(self) -> Optional[str]:
        """Entry-point prefix of the group's transforms: ``calibrator`` -> ``calibrate``."""
        return self.stage.name.lower() if self.stage is not None else None

    @property
    def schema_name(self) -> str:
        """The name under which :attr:`schema` is served to Hydra."""
        return "schema_none" if self.stage is not None else f"schema_{self.name}"


#: The engine's groups, in the order of ``conf/config.yaml``'s defaults list.
BUILTIN_GROUPS: tuple[ConfigGroup, ...] = (
    ConfigGroup("model", None, ModelConfig, default="tiny"),
    ConfigGroup("cache", Stage.CACHE, NoCacheConfig),
    ConfigGroup("calibrator", Stage.CALIBRATE),
    ConfigGroup("parallel", Stage.SHARD),
    ConfigGroup("quant", Stage.QUANTIZE),
    ConfigGroup("compile", Stage.COMPILE),
    ConfigGroup("attention", Stage.ADAPT),
    ConfigGroup("offload", Stage.OFFLOAD),
    ConfigGroup("workload", None, WorkloadConfig, default="default"),
    ConfigGroup("report", None, ReportConfig, default="latency"),
)


def _plugin_groups(builtin: tuple[ConfigGroup, ...]) -> tuple[ConfigGroup, ...]:
    taken = {group.name: "dit_engine" for group in builtin}
    prefixes = {group.prefix: group.name for group in builtin if group.prefix}
    found = []
    for ep in sorted(entry_points(group=GROUP_ENTRY_POINTS), key=lambda ep: ep.name):
        try:
            loaded = ep.load()
        except Exception as err:  # a broken plugin names itself instead of failing anonymously
            raise RegistryError(f"config group entry point '{ep.name}' ({ep.value}) failed to import: {err}") from err
        for group in loaded if isinstance(loaded, (list, tuple)) else [loaded]:
            if not isinstance(group, ConfigGroup):
                raise RegistryError(f"entry point '{ep.name}' ({ep.value}) is not a dit_engine.groups.ConfigGroup")
            if group.name in taken:
                raise RegistryError(f"config group '{group.name}' from {ep.value} is already defined by {taken[group.name]}; "
                                    "rename the plugin's group")
            if group.prefix in prefixes:
                raise RegistryError(f"config group '{group.name}' from {ep.value} uses stage {group.stage.name}, already the "
                                    f"stage of group '{prefixes[group.prefix]}'; give it a stage of its own")
            taken[group.name] = ep.value
            if group.prefix:
                prefixes[group.prefix] = group.name
            found.append(group)
    return tuple(found)


@functools.lru_cache(maxsize=None)
def config_groups() -> tuple[ConfigGroup, ...]:
    """Every config group: the engine's, then the plugins' (``dit_engine.groups`` entry points)."""
    return BUILTIN_GROUPS + _plugin_groups(BUILTIN_GROUPS)


def group_names() -> list[str]:
    """The names of every config group, in table order."""
    return [group.name for group in config_groups()]


def get_group(name: str) -> Optional[ConfigGroup]:
    """The group called ``name``; None when there is none."""
    return next((group for group in config_groups() if group.name == name), None)


def technique_groups() -> tuple[ConfigGroup, ...]:
    """The groups whose options become plan steps, in table order."""
    return tuple(group for group in config_groups() if group.stage is not None)


def group_by_prefix(prefix: str) -> Optional[ConfigGroup]:
    """The technique group whose transforms are registered as ``<prefix>.<impl>``; None if none is."""
    return next((group for group in technique_groups() if group.prefix == prefix), None)


def stage_order() -> list[enum.IntEnum]:
    """Every stage of the technique groups (and the engine's own), in application order."""
    return sorted({*Stage, *(group.stage for group in technique_groups())}, key=int)


def engine_schemas() -> dict[str, dict[str, type]]:
    """Group -> {schema name -> dataclass} of the schemas the groups bring themselves (the
    techniques' schemas come with their transforms, see :mod:`dit_engine.config.schema_source`)."""
    return {group.name: {group.schema_name: group.schema} for group in config_groups()}


@functools.lru_cache(maxsize=None)
def engine_config_class() -> type:
    """The root config dataclass: one field per group, then the run switches.

    Attributes of the generated class:
        dry_run: compose and compile the plan, print it, write ``plan.txt``; load no weights.
        quiet: no progress bars and only warnings in the log.
        threads: torch intra-op threads for the run (null: torch's default, one per core; ranks a
            local launch starts get cores / ranks each). On a machine shared with other work,
            ``threads=1`` keeps a run from waiting on its own threads (see docs/measurement.md).
        blocked: adapter or transform entry-point names that must not be used even if installed
            (e.g. ``[cache.dbcache]``).
        serve: the HTTP server's settings (``python -m dit_engine.serve``).
        lora: a LoRA adapter loaded into the transformer (``lora.path=...``).
    """
    builtin = {group.name for group in BUILTIN_GROUPS}
    # conf/config.yaml's defaults list chooses the engine's groups; a plugin's group gets its
    # default option from this schema's own defaults list (Hydra reads it like a YAML one)
    plugin_defaults = [{group.name: group.default} for group in config_groups() if group.name not in builtin]
    fields: list[tuple[str, Any, Any]] = [("defaults", list[Any], field(default_factory=lambda: [*plugin_defaults, "_self_"]))]
    fields += [(group.name, Any, field(default=MISSING)) for group in config_groups()]
    fields += [
        ("dry_run", bool, field(default=False)),
        ("quiet", bool, field(default=False)),
        ("threads", Optional[int], field(default=None)),
        ("blocked", list[str], field(default_factory=list)),
        ("serve", ServeConfig, field(default_factory=ServeConfig)),
        ("lora", LoraConfig, field(default_factory=LoraConfig)),
    ]
    cls = make_dataclass("EngineConfig", fields)
    cls.__doc__ = engine_config_class.__doc__.replace("Attributes of the generated class:", "The whole run.\n\n    Attributes:")
    return cls
