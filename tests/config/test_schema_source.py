"""The schemas every option extends are internal: never listed as options, refused when chosen,
served lazily (composing the default config imports no transform), and in step with the
transforms they mirror."""

from __future__ import annotations


import pytest

from dit_engine.config import compose_config
from dit_engine.config.groups import group_names, technique_groups
from dit_engine.config.schema_source import group_schemas, schema_exists
from dit_engine.errors import ConfigError


def test_no_schema_is_an_option_of_any_group():
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from dit_engine.config import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="dit_engine.conf", version_base=None):
        loader = GlobalHydra.instance().config_loader()
        for group in group_names():
            options = loader.get_group_options(group)
            assert options and not [o for o in options if o.startswith("schema_")], (group, options)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("overrides", [["cache=schema_dbcache"], ["cache=schema_none"], ["model=schema_model"],
                                       ["calibrator=schema_taylorseer", "cache=dbcache"]])
def test_choosing_a_schema_is_refused_naming_the_real_options(overrides):
    group, _, option = overrides[0].partition("=")
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    message = str(info.value)
    assert message.startswith(f"unknown option {group}={option} (an internal schema, not an option); available {group} options: ")
    assert "schema_" not in message.split("options: ")[1] and "\n" not in message


def test_every_installed_transform_schema_is_served():
    for group, schemas in group_schemas().items():
        for name, schema in schemas.items():
            assert schema_exists(f"{group}/{name}"), (group, name)
    assert not schema_exists("cache/dbcache") and not schema_exists("cache/schema_nosuch")


def test_every_transform_group_has_a_stage_of_its_own():
    prefixes = [group.prefix for group in technique_groups()]
    assert len(set(prefixes)) == len(prefixes) and None not in prefixes
