"""Where a group's options come from: YAML files in dit_engine's config folder and in the config
folders installed plugins declare (entry-point group ``dit_engine.conf``)."""

from __future__ import annotations

from importlib import resources
from importlib.metadata import entry_points

from dit_engine.config.model_source import GROUP as MODEL_GROUP
from dit_engine.config.model_source import adapter_names

#: The package holding the shipped config folder (``conf/`` in the source tree).
CONFIG_MODULE = "dit_engine.conf"
#: Entry-point group under which a plugin names its config package.
CONF_GROUP = "dit_engine.conf"


def plugin_config_modules() -> list[tuple[str, str]]:
    """``(entry-point name, config package)`` of every installed plugin, sorted by name."""
    return sorted({(ep.name, ep.value) for ep in entry_points(group=CONF_GROUP)})


def config_modules() -> list[str]:
    """The packages holding config folders: dit_engine's, then every installed plugin's."""
    return [CONFIG_MODULE] + [module for _, module in plugin_config_modules()]


def group_options(group: str, include_plugins: bool = True) -> list[str]:
    """Options of a config group: YAML files, shipped and (unless ``include_plugins=False``) from
    installed plugins (``cache`` -> ``["dbcache", ...]``); for ``model``, every installed adapter
    too (:mod:`dit_engine.config.model_source`)."""
    options = set(adapter_names(include_plugins)) if group == MODEL_GROUP else set()
    for module in config_modules() if include_plugins else [CONFIG_MODULE]:
        try:
            folder = resources.files(module).joinpath(group)
        except ModuleNotFoundError:
            continue
        if folder.is_dir():
            options.update(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(options)
