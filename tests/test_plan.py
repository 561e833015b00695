"""Plan compilation: stage order, explain(), per-transform and cross-group checks."""

from __future__ import annotations

import pytest

from dit_engine.config import compose_config
from conftest import prepare
from dit_engine.errors import PlanError
from dit_engine.plan import Stage, compile_plan
from dit_engine.registry import Registry


def _plan(*overrides):
    return prepare(compose_config(list(overrides))).plan


def test_stage_order_is_the_documented_one():
    assert [s.name for s in sorted(Stage)] == ["QUANTIZE", "SHARD", "ADAPT", "CACHE", "CALIBRATE", "COMPILE", "OFFLOAD"]


def test_plan_orders_steps_by_stage_and_explains_them():
    plan = _plan("cache=dbcache", "cache.front_blocks=2", "cache.back_blocks=3")
    assert [s.name for s in plan.steps] == ["adapt.step_state", "cache.dbcache"]
    assert [s.stage for s in plan.steps] == sorted(s.stage for s in plan.steps)
    text = plan.explain()
    assert "DBCache F2B3 over 12 blocks" in text
    assert "[group cache; dit_engine" in text
    assert "stage order: QUANTIZE < SHARD < ADAPT < CACHE" in text


def test_no_cache_plan_has_only_the_step_state():
    assert [s.name for s in _plan().steps] == ["adapt.step_state"]


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["cache.front_blocks=6", "cache.back_blocks=6"], "leaves no middle block to cache in this model's 12 blocks"),
        (["cache.threshold=-0.1"], "cache.threshold=-0.1 must be >= 0"),
        (["cache.front_blocks=0"], "needs at least 1; use cache.front_blocks=1"),
        (["cache.warmup_steps=-1"], "cache.warmup_steps=-1 is negative"),
        (["cache.max_cached_steps=-5"], "use -1 (no limit)"),
    ],
)
def test_dbcache_checks(overrides, expected):
    with pytest.raises(PlanError) as info:
        _plan("cache=dbcache", *overrides)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_all_problems_are_reported_together():
    with pytest.raises(PlanError) as info:
        _plan("cache=dbcache", "cache.threshold=-1", "cache.front_blocks=20", "workload.prompts=[cat]")
    assert len(info.value.problems) == 3


def test_unknown_prompt_for_tiny_model_lists_known_ones():
    with pytest.raises(PlanError, match="unknown prompt 'cat' for the tiny model; known prompts: zero, one, two"):
        _plan("workload.prompts=[three,cat]")


def test_calibrator_without_cache_is_a_plan_error():
    with pytest.raises(PlanError, match="calibrator=taylorseer needs a cache to calibrate; add cache=dbcache"):
        _plan("calibrator=taylorseer")


def test_calibrator_comes_after_the_cache_it_binds_to():
    plan = _plan("calibrator=taylorseer", "cache=scm_static")
    assert [s.name for s in plan.steps] == ["adapt.step_state", "cache.scm", "calibrate.taylorseer"]


def test_flux_dry_run_needs_no_weights_but_a_real_run_does():
    assert _plan("model=flux", "dry_run=true").model_info.total_blocks == 57
    # the default is FLUX.1-dev's hub id: offline and not cached, the plan says so up front
    with pytest.raises(PlanError, match="model.pretrained=black-forest-labs/FLUX.1-dev is not in the local Hugging Face cache"):
        _plan("model=flux")
    with pytest.raises(PlanError, match="model=flux needs weights: set model.pretrained="):
        _plan("model=flux", "model.pretrained=null")
    with pytest.raises(PlanError, match="model.pretrained=/no/such/dir does not exist"):
        _plan("model=flux", "model.pretrained=/no/such/dir")


def test_compile_plan_reads_no_weights(monkeypatch):
    """compile_plan only sees ModelInfo: loading weights during it would be a bug."""
    import safetensors.torch

    def forbidden(*args, **kwargs):
        raise AssertionError("weights loaded during planning")

    monkeypatch.setattr(safetensors.torch, "load_file", forbidden)
    cfg = compose_config(["cache=dbcache"])
    registry = Registry()
    adapter = registry.adapter("tiny")
    plan = compile_plan(cfg, registry, adapter, adapter.model_info(cfg.model))
    assert plan.steps[-1].name == "cache.dbcache"
