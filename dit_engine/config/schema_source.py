"""A Hydra config source that serves dit_engine's schemas, lazily and unlisted.

Every YAML option extends a schema (``defaults: [schema_dbcache]`` in ``conf/cache/dbcache.yaml``),
so Hydra looks up ``cache/schema_dbcache`` while composing. This source answers those lookups:

* **lazily**: a technique's schema is its ``dit_engine.schemas`` entry point (a torch-free
  module: every built-in technique has one) or else its transform's ``config_class`` (importing
  the transform, and torch); only the schemas a composition actually uses are imported, so
  composing, ``--help`` and shell completion start without torch;
* **unlisted**: it never lists a schema as an option of a group, so ``--help``, shell completion
  and Hydra's "available options" leave them out. Choosing one directly (``cache=schema_dbcache``)
  is refused by :func:`schema_choice_problem` wherever a config is composed.

It is registered by hand (``Plugins.instance().register``, Hydra's documented way for plugin
classes outside ``hydra_plugins``) and put on the search path by
:class:`~dit_engine.config.search_path.DitEngineSearchPathPlugin`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Optional

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import DictConfig, OmegaConf

from dit_engine.config.groups import engine_config_class, engine_schemas, group_by_prefix, technique_groups
from dit_engine.config.options import group_options
from dit_engine.config.schema import ROOT_SCHEMA, is_schema_name
from dit_engine.errors import RegistryError
from dit_engine.registry import TRANSFORM_GROUP, Registry

SCHEME = "dit-engine-schema"
#: The search-path entry of the source (appended after the config folders).
SEARCH_PATH = f"{SCHEME}://"
PROVIDER = "dit_engine-schemas"

#: "<group>/<schema name>" -> composed schema node, filled on first use (one per process).
_nodes: dict[str, DictConfig] = {}
#: "<group>/<schema name>" -> transform entry point, read from the entry points once.
_transform_schemas: dict[str, str] | None = None


def transform_schema_names(registry: Registry | None = None) -> dict[str, dict[str, str]]:
    """Technique group -> {``schema_<impl>`` -> transform entry-point name} of every installed
    transform, read from the entry points alone (nothing is imported)."""
    registry = registry or Registry()
    names: dict[str, dict[str, str]] = {group.name: {} for group in technique_groups()}
    for name in registry.names(TRANSFORM_GROUP):
        prefix, _, impl = name.partition(".")
        group = group_by_prefix(prefix)
        if group is not None:
            names[group.name][f"schema_{impl}"] = name
    return names


def transform_schema(entry_point: str, registry: Registry | None = None) -> type | None:
    """The config dataclass of a transform (:meth:`Registry.config_class`: torch-free where the
    transform registers its schema); None when it has none. Raises
    :class:`~dit_engine.errors.RegistryError` when it cannot be loaded."""
    return (registry or Registry()).config_class(entry_point)


def group_schemas(registry: Registry | None = None) -> dict[str, dict[str, type]]:
    """Group -> {schema name -> dataclass}: the groups' own plus one ``schema_<impl>`` per installed
    transform (its ``config_class``), so a plugin's transform brings its own schema.

    This imports every transform (and so torch); composing a config never calls it (the schema
    source imports only the schemas a composition uses). A transform entry point that fails to
    import is left out here; using it reports the import error.
    """
    registry = registry or Registry()
    schemas = engine_schemas()
    for group, names in transform_schema_names(registry).items():
        for schema_name, entry_point in names.items():
            try:
                config_class = transform_schema(entry_point, registry)
            except RegistryError:
                continue
            if config_class is not None:
                schemas[group][schema_name] = config_class
    return schemas


def _transform_schema_paths() -> dict[str, str]:
    global _transform_schemas
    if _transform_schemas is None:
        _transform_schemas = {f"{group}/{schema}": entry_point
                              for group, names in transform_schema_names().items() for schema, entry_point in names.items()}
    return _transform_schemas


def _engine_schema(path: str) -> type | None:
    if path == ROOT_SCHEMA:
        return engine_config_class()
    group, _, name = path.partition("/")
    return engine_schemas().get(group, {}).get(name)


def _strip(config_path: str) -> str:
    path = config_path.strip("/")
    return path[: -len(".yaml")] if path.endswith(".yaml") else path


def schema_exists(config_path: str) -> bool:
    """Whether ``<group>/schema_<name>`` (or ``schema_engine``) is a schema; imports nothing."""
    path = _strip(config_path)
    if not is_schema_name(path.rpartition("/")[2]):
        return False
    if _engine_schema(path) is not None:
        return True
    group = path.partition("/")[0]
    return path in _transform_schema_paths()


def schema_node(config_path: str) -> DictConfig:
    """The schema at ``config_path`` as a structured config (imports its transform on first use)."""
    path = _strip(config_path)
    if path not in _nodes:
        schema = _engine_schema(path)
        if schema is None:
            schema = transform_schema(_transform_schema_paths()[path])  # RegistryError: one line, names the fix
        _nodes[path] = OmegaConf.structured(schema) if schema is not None else OmegaConf.create({})
    return _nodes[path]


class SchemaSource(ConfigSource):
    """Serves ``schema_engine`` and ``<group>/schema_<name>``; lists nothing."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return False  # never a group: nothing here is listed as an option

    def is_config(self, config_path: str) -> bool:
        return schema_exists(config_path)

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> list[str]:
        return []

    def load_config(self, config_path: str) -> ConfigResult:
        if not schema_exists(config_path):
            raise ConfigLoadError(f"Schema not found: {config_path}")
        # Hydra merges into what it loads: every load gets its own copy of the cached node.
        node = copy.deepcopy(schema_node(config_path))
        return ConfigResult(config=node, path=f"{SCHEME}://", provider=self.provider, header={"package": None})


def schema_choice_problem(choices: Mapping[str, Any], options: Any = None) -> Optional[str]:
    """A one-line refusal when a group option chosen (Hydra's ``runtime.choices``) is an internal
    schema (``cache=schema_dbcache``), naming the group's real options; None when all are options.

    ``options(group)`` lists a group's options (default: the shipped and plugins' ones).
    """
    for group, option in choices.items():
        if "/" in str(group) or str(group).startswith("hydra"):
            continue
        if is_schema_name(option):
            options = options or group_options
            return (f"unknown option {group}={option} (an internal schema, not an option); "
                    f"available {group} options: {', '.join(options(group)) or '(none)'}")
    return None
