"""Config groups, schemas and composition (the same overrides on the CLI and in ``dit_engine.apply``)."""

from dit_engine.config.compose import compose_config
from dit_engine.config.groups import Stage, config_groups, engine_config_class
from dit_engine.config.options import group_options
from dit_engine.config.search_path import register_schemas

__all__ = ["Stage", "compose_config", "config_groups", "engine_config_class", "group_options", "register_schemas"]
