"""Every shipped YAML option composes and dry-runs; bad overrides fail with one-line fixes."""

from __future__ import annotations

import itertools

import pytest

from dit_engine.config import compose_config, group_options
from dit_engine.config.schema import GROUP_SCHEMAS
from dit_engine.engine import prepare
from dit_engine.errors import ConfigError

GROUPS = list(GROUP_SCHEMAS)


def _cell(group: str, option: str) -> list[str]:
    overrides = [f"{group}={option}", "dry_run=true"]
    return overrides


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), f"group {group} ships no option"


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in group_options(g)])
def test_each_option_composes_and_compiles(group, option):
    cfg = compose_config(_cell(group, option))
    prepared = prepare(cfg)
    text = prepared.plan.explain()
    assert "adapt.step_state" in text
    if group == "cache" and option != "none":
        assert "cache.dbcache" in text


def test_pairwise_combinations_compile():
    """Every pair of options from two different groups composes and compiles."""
    checked = 0
    for (g1, g2) in itertools.combinations(GROUPS, 2):
        for o1, o2 in itertools.product(group_options(g1), group_options(g2)):
            prepare(compose_config([f"{g1}={o1}", f"{g2}={o2}", "dry_run=true"]))
            checked += 1
    assert checked >= len(GROUPS)


def test_cache_none_accepts_cache_settings_so_sweeps_can_cross_them():
    cfg = compose_config(["cache=none", "cache.threshold=0.2"])
    assert cfg.cache.name == "none" and cfg.cache.threshold == 0.2


def test_fbcache_is_f1b0_dbcache():
    cfg = compose_config(["cache=fbcache"])
    assert (cfg.cache.name, cfg.cache.front_blocks, cfg.cache.back_blocks) == ("dbcache", 1, 0)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["cache=dbcachee"], "unknown option cache=dbcachee; available cache options: dbcache, fbcache, none"),
        (["model=sd9"], "available model options: flux, tiny"),
        (["cache=dbcache", "cache.threshhold=0.1"], "unknown key cache.threshhold; valid keys: front_blocks, back_blocks, threshold"),
        (["cache=dbcache", "cache.threshold=abc"], "cache.threshold=abc is not a valid float"),
        (["calibrator.order=2"], "pick one first, e.g. calibrator=<option> calibrator.order=..."),
        (["dry_rnu=true"], "unknown key dry_rnu"),
    ],
)
def test_bad_overrides_name_the_fix(overrides, expected):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
