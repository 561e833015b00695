"""A Hydra config source that makes every installed adapter a ``model=`` option.

``model=flux`` needs no YAML file: the option is served from the adapter registered as ``flux``
(entry-point group ``dit_engine.adapters``), with the checkpoint, revision and dtype the adapter
declares (``default_pretrained``, ``default_revision``, ``default_dtype``). A YAML file
``conf/model/<name>.yaml`` (``model=tiny``, a plugin's own) comes first on the search path and wins.

Listing the options reads entry-point names only (``--help`` and completion import nothing);
loading one imports its adapter.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Optional

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf

from dit_engine.config.schema import ModelConfig
from dit_engine.errors import RegistryError
from dit_engine.registry import ADAPTER_GROUP, FIRST_PARTY, Registry

SCHEME = "dit-engine-models"
#: The search-path entry of the source (after the config folders, whose files win).
SEARCH_PATH = f"{SCHEME}://"
PROVIDER = "dit_engine-adapters"
GROUP = "model"


def adapter_names(include_plugins: bool = True) -> list[str]:
    """Names of the installed adapters (first-party only with ``include_plugins=False``), sorted."""
    names = set()
    for ep in entry_points(group=ADAPTER_GROUP):
        distribution = ep.dist.metadata["Name"].replace("-", "_").lower() if ep.dist is not None else ""
        if include_plugins or distribution == FIRST_PARTY:
            names.add(ep.name)
    return sorted(names)


def model_option(name: str) -> ModelConfig:
    """The ``model=<name>`` option served for adapter ``name`` (imports the adapter)."""
    adapter_class, _ = Registry().load(ADAPTER_GROUP, name)
    return ModelConfig(adapter=name, pretrained=adapter_class.default_pretrained, revision=adapter_class.default_revision,
                       dtype=adapter_class.default_dtype)


def _option(config_path: str) -> Optional[str]:
    group, _, name = config_path.strip("/").removesuffix(".yaml").partition("/")
    return name if group == GROUP and name in adapter_names() else None


class ModelOptionSource(ConfigSource):
    """Serves ``model/<adapter>`` for every installed adapter and lists them as the group's options."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") == GROUP

    def is_config(self, config_path: str) -> bool:
        return _option(config_path) is not None

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> list[str]:
        if config_path.strip("/") != GROUP or results_filter not in (None, ObjectType.CONFIG):
            return []
        return adapter_names()

    def load_config(self, config_path: str) -> ConfigResult:
        name = _option(config_path)
        if name is None:
            raise ConfigLoadError(f"Model option not found: {config_path}")
        try:
            node = OmegaConf.structured(model_option(name))
        except RegistryError as err:  # a broken plugin adapter: Hydra reports the load error in one line
            raise ConfigLoadError(str(err)) from None
        return ConfigResult(config=node, path=SEARCH_PATH, provider=self.provider, header={"package": None})
