"""A Hydra search-path plugin that puts the config folders of installed dit_engine plugins on
Hydra's search path. It is registered with ``Plugins.instance().register`` (Hydra's documented
way to register a plugin class by hand) whenever dit_engine composes a config, on the command
line and in :func:`dit_engine.apply` alike, so editable and wheel installs behave the same.

A plugin package declares its config folder, a package holding ``<group>/<option>.yaml`` files,
under the entry-point group ``dit_engine.conf``::

    [project.entry-points."dit_engine.conf"]
    my_plugin = "my_plugin.conf"

and its options then compose like the shipped ones (``cache=my_cache``, ``model=my_model``) on the
command line, in :func:`dit_engine.apply` and under ``--help``.
"""

from __future__ import annotations

import functools

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from dit_engine.config import model_source
from dit_engine.config.options import plugin_config_modules
from dit_engine.config.schema_source import PROVIDER, SEARCH_PATH, SchemaSource


class DitEngineSearchPathPlugin(SearchPathPlugin):
    """Appends ``pkg://<config package>`` of every ``dit_engine.conf`` entry point, then the
    adapters' ``model=`` options (:mod:`dit_engine.config.model_source`: YAML files come first and
    win) and the schema source (:mod:`dit_engine.config.schema_source`)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for name, module in plugin_config_modules():
            search_path.append(provider=f"dit_engine-plugin-{name}", path=f"pkg://{module}")
        search_path.append(provider=model_source.PROVIDER, path=model_source.SEARCH_PATH)
        search_path.append(provider=PROVIDER, path=SEARCH_PATH)


@functools.cache  # once per process: Hydra would list a plugin registered twice twice
def register_schemas() -> None:
    """Make Hydra find the schemas, the adapters' ``model=`` options and the plugins' config
    folders: registers :class:`DitEngineSearchPathPlugin` and the two config sources. The schema
    source never lists a schema, so they are not options of any group."""
    plugins = Plugins.instance()
    plugins.register(SchemaSource)
    plugins.register(model_source.ModelOptionSource)
    plugins.register(DitEngineSearchPathPlugin)
