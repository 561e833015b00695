"""Entry-point registry: lazy lookup, collisions between distributions, blocked names."""

from __future__ import annotations

import sys
import textwrap

import pytest

from dit_engine.errors import RegistryError
from dit_engine.registry import ADAPTER_GROUP, TRANSFORM_GROUP, Registry


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install a test-only distribution (a real .dist-info on sys.path) claiming entry points."""

    def install(name: str, entry_points: dict[str, dict[str, str]], module_source: str = ""):
        dist_info = tmp_path / f"{name}-9.9.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9\n")
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines.extend(f"{key} = {value}" for key, value in eps.items())
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        if module_source:
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(module_source))
        monkeypatch.syspath_prepend(str(tmp_path))
        return name

    yield install
    for module in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[module]


def test_first_party_plugins_come_through_entry_points():
    registry = Registry()
    assert {"tiny", "flux"} <= set(registry.names(ADAPTER_GROUP))
    assert {"adapt.step_state", "cache.dbcache"} <= set(registry.names(TRANSFORM_GROUP))
    cls, provider = registry.transform_class("cache.dbcache")
    assert cls.__name__ == "DBCacheTransform"
    assert provider.distribution == "dit_engine"


def test_a_third_party_adapter_is_found_and_loaded_lazily(fake_distribution):
    fake_distribution(
        "fake_plugin",
        {ADAPTER_GROUP: {"fakemodel": "fake_plugin:FakeAdapter", "broken": "fake_plugin_missing:Nope"}},
        """
        from dit_engine.adapter import Adapter
        class FakeAdapter(Adapter):
            name = "fakemodel"
            pipeline_classes = ("FakePipeline",)
        """,
    )
    registry = Registry()
    assert "fakemodel" in registry.names(ADAPTER_GROUP)
    adapter = registry.adapter("fakemodel")
    assert adapter.provider.distribution == "fake_plugin"
    assert "fake_plugin_missing" not in sys.modules  # the broken entry was never imported
    with pytest.raises(RegistryError, match="entry point 'broken' .* failed to import"):
        registry.adapter("broken")


def test_two_distributions_claiming_one_name_is_an_error_naming_both(fake_distribution):
    fake_distribution("fake_rival", {TRANSFORM_GROUP: {"cache.dbcache": "fake_rival:RivalCache"}})
    with pytest.raises(RegistryError) as info:
        Registry().transform_class("cache.dbcache")
    message = str(info.value)
    assert "claimed by dit_engine (dit_engine.caches.dbcache:DBCacheTransform) and fake_rival (fake_rival:RivalCache)" in message
    assert "blocked" in message


def test_blocked_names_are_refused():
    with pytest.raises(RegistryError, match="transform 'cache.dbcache' is blocked by the config key 'blocked'"):
        Registry(blocked=["cache.dbcache"]).transform_class("cache.dbcache")
    assert "flux" not in [a.name for a in Registry(blocked=["flux"]).adapters()]


def test_unknown_name_lists_installed_ones():
    with pytest.raises(RegistryError, match="no transform named 'cache.nope' is installed .* installed: .*cache.dbcache"):
        Registry().transform_class("cache.nope")


def test_blocked_through_config(tmp_path):
    from dit_engine.config import compose_config
    from conftest import prepare

    with pytest.raises(RegistryError, match="blocked"):
        prepare(compose_config(["cache=dbcache", "blocked=[cache.dbcache]"]))
