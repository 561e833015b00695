"""Family facts (thresholds, TeaCache polynomials, MagCache curves) live in the technique modules,
keyed by adapter name, and reach the config through each technique's ``family_defaults``."""

from __future__ import annotations

import json

import pytest
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from dit_engine.adapter import Adapter
from dit_engine.caches import dbcache, dbprune, magcache, scm, teacache
from dit_engine.caches.peers import DiffusersMagCacheTransform
from dit_engine.diffusers_adapter import DiffusersAdapter
from dit_engine.digits.model import WEIGHTS_DIR
from dit_engine.registry import Registry

THRESHOLD_TRANSFORMS = (dbcache.DBCacheTransform, scm.SCMTransform, dbprune.DBPruneTransform,
                        teacache.TeaCacheTransform, magcache.MagCacheTransform)


def adapter(name):
    return Registry().adapter(name)


class PluginAdapter(DiffusersAdapter):
    name = "plugin_family_for_facts"


class BareAdapter(Adapter):
    name = "bare_family_for_facts"


def thresholds(family):
    return [t.family_defaults(family).get("threshold") for t in THRESHOLD_TRANSFORMS]


def test_thresholds_by_family():
    assert thresholds(adapter("flux")) == [0.08, 0.08, 0.05, 0.4, 0.06]
    assert thresholds(adapter("wan")) == [0.08, 0.08, 0.05, 0.2, 0.06]
    assert thresholds(adapter("tiny")) == [0.2, 0.2, 0.15, 0.2, 0.12]
    # any diffusers DiT (a plugin's too) gets the large-DiT values; a bare adapter none, so the
    # check asks for cache.threshold
    assert thresholds(PluginAdapter()) == [0.08, 0.08, 0.05, 0.2, 0.06]
    assert thresholds(BareAdapter()) == [None] * 5


def test_published_and_shipped_calibrations():
    flux = teacache.TeaCacheTransform.family_defaults(adapter("flux"))
    assert flux["coefficients"] == [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]
    curve = [float(r) for r in FLUX_MAG_RATIOS]
    assert magcache.MagCacheTransform.family_defaults(adapter("flux"))["mag_ratios"] == curve
    assert DiffusersMagCacheTransform.family_defaults(adapter("flux")) == {"mag_ratios": curve}

    shipped = json.loads((WEIGHTS_DIR / "calibration.json").read_text())["transformers"]["transformer"]
    tiny = adapter("tiny")
    assert teacache.TeaCacheTransform.family_defaults(tiny)["coefficients"] == shipped["teacache"]["coefficients"]
    assert magcache.MagCacheTransform.family_defaults(tiny)["mag_ratios"] == shipped["magcache"]["mag_ratios"]

    wan = adapter("wan")
    assert "coefficients" not in teacache.TeaCacheTransform.family_defaults(wan)
    assert DiffusersMagCacheTransform.family_defaults(wan) == {}


def test_defaults_are_fresh_lists():
    first = teacache.TeaCacheTransform.family_defaults(adapter("flux"))["coefficients"]
    first.append(0.0)
    assert len(teacache.TEACACHE_COEFFICIENTS["flux"]) == 5


def test_a_plugin_adds_its_family(monkeypatch):
    monkeypatch.setitem(dbcache.DBCACHE_THRESHOLDS, PluginAdapter.name, 0.1)
    monkeypatch.setitem(teacache.TEACACHE_COEFFICIENTS, PluginAdapter.name, [1.0, 0.0])
    monkeypatch.setitem(magcache.MAG_RATIOS, PluginAdapter.name, [1.0, 0.98])
    family = PluginAdapter()
    assert dbcache.DBCacheTransform.family_defaults(family) == {"threshold": 0.1}
    assert teacache.TeaCacheTransform.family_defaults(family)["coefficients"] == [1.0, 0.0]
    assert magcache.MagCacheTransform.family_defaults(family)["mag_ratios"] == [1.0, 0.98]


@pytest.mark.parametrize("fact", ["transform_defaults", "teacache_coefficients", "mag_ratios"])
def test_adapters_carry_no_technique_facts(fact):
    assert not hasattr(Adapter, fact)
    assert not hasattr(adapter("flux"), fact) and not hasattr(adapter("tiny"), fact)
