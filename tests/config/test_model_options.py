"""Every installed adapter is a ``model=`` option without a YAML file; a YAML file wins."""

from __future__ import annotations

import pytest

from dit_engine.config import compose_config, group_options
from dit_engine.config.model_source import adapter_names
from dit_engine.errors import ConfigError
from dit_engine.registry import Registry

FAMILIES = [name for name in adapter_names(include_plugins=False) if name != "tiny"]


def test_every_adapter_is_a_model_option():
    assert set(adapter_names()) <= set(group_options("model"))
    assert len(FAMILIES) >= 30


@pytest.mark.parametrize("name", FAMILIES)
def test_a_model_option_composes_what_its_adapter_declares(name):
    adapter = Registry().adapter(name)
    model = compose_config([f"model={name}"]).model
    assert (model.adapter, model.pretrained, model.revision, model.dtype) == (
        name, adapter.default_pretrained, adapter.default_revision, adapter.default_dtype)
    assert model.dtype == "bfloat16" and (name == "auto" or model.pretrained)  # real checkpoints: a hub id, bf16


def test_a_yaml_option_wins_over_the_served_one():
    assert compose_config([]).model.device == "cpu"  # conf/model/tiny.yaml
    plugin = compose_config(["model=example_dit"]).model  # the plugin's own conf/model/example_dit.yaml
    assert plugin.pretrained == "facebook/DiT-XL-2-256"


def test_an_unknown_model_names_the_served_options():
    with pytest.raises(ConfigError, match=r"unknown option model=fluxx; available model options: .*\bflux\b.*\bwan\b"):
        compose_config(["model=fluxx"])
