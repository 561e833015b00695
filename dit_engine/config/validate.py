"""Checks of a composed config that Hydra's schemas cannot express: keys added with ``+`` that no
schema knows (at the top level or inside a group), and numbers that are NaN or infinite.

Run by :meth:`dit_engine.session.Session.prepare` before the plan
is compiled, so such input is one line naming the fix, never a traceback or a silent no-op.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dit_engine.config.groups import config_groups, engine_config_class, get_group
from dit_engine.errors import RegistryError
from dit_engine.registry import Registry


def _fields(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def _group_schema(group_name: str, node: Any, registry: Registry) -> type | None:
    """The dataclass the group's chosen option must match, or None when unknown (reported elsewhere)."""
    group = get_group(group_name)
    name = node.get("name") if isinstance(node, DictConfig) else None
    if group.stage is None or name in (None, "none"):  # a settings group, or a technique's none option
        return group.schema
    try:
        return registry.config_class(f"{group.prefix}.{name}")
    except (RegistryError, KeyError):
        return None


def unknown_key_problems(cfg: DictConfig, registry: Registry) -> list[str]:
    """Keys no schema knows, e.g. ``+cache.foo=1`` or ``+foo=1``."""
    problems = []
    known_top = set(_fields(engine_config_class()))
    for key in cfg:
        if key not in known_top:
            problems.append(f"unknown key {key}; top-level keys: {', '.join(sorted(known_top))} (a typo, or a key meant for a group?)")
    for group in (group.name for group in config_groups()):
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        schema = _group_schema(group, node, registry)
        if schema is None:
            continue
        fields = _fields(schema)
        for key in node:
            if key not in fields:
                problems.append(f"unknown key {group}.{key}; valid keys: {', '.join(fields)}")
    return problems


def non_finite_problems(cfg: DictConfig) -> list[str]:
    """Every NaN or infinite number in the config, by its full key."""
    problems = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{path}={value} is not a finite number; give a real value")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return problems


def run_switch_problems(cfg: DictConfig) -> list[str]:
    """The root switches' ranges (the schema checks their types)."""
    threads = cfg.get("threads")
    if threads is not None and threads < 1:
        return [f"threads={threads}: use 1 or more torch threads, or null (torch's default: one per core)"]
    return []


def config_problems(cfg: DictConfig, registry: Registry) -> list[str]:
    """Unknown keys, non-finite numbers and the root switches' ranges, each a one-line fix."""
    return unknown_key_problems(cfg, registry) + non_finite_problems(cfg) + run_switch_problems(cfg)
