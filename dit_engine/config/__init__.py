"""Config schemas and composition (the same overrides on the CLI and in ``dit_engine.apply``)."""

from dit_engine.config.compose import compose_config, group_options
from dit_engine.config.schema import EngineConfig, register_schemas

__all__ = ["EngineConfig", "compose_config", "group_options", "register_schemas"]
