"""The session: one object plans, loads and runs for the CLI and the Python API."""

from __future__ import annotations

import json

import pytest

from dit_engine.errors import PlanError
from dit_engine.plan import Stage
from dit_engine.session import Session
from dit_engine.transforms.base import Transform


def test_prepare_plans_without_weights():
    session = Session.from_overrides(["cache=dbcache", "workload=smoke"]).prepare()
    assert session.adapter.name == "tiny" and session.workload.num_inference_steps == 4
    assert [step.name for step in session.plan.steps] == ["adapt.step_state", "cache.dbcache"]


def test_prepare_lists_every_problem_at_once():
    with pytest.raises(PlanError) as info:
        Session.from_overrides(["cache=dbcache", "cache.threshold=-1", "workload.repeats=0"]).prepare()
    assert len(info.value.problems) == 2


def test_run_writes_the_run_directory(tmp_path):
    metrics = Session.from_overrides(["cache=fbcache", "cache.warmup_steps=1", "workload=smoke", "quiet=true"]).run(tmp_path / "run")
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["compute"]["blocks_computed"] == metrics["compute"]["blocks_computed"] < written["compute"]["blocks_total"]
    assert (tmp_path / "run" / "plan.txt").read_text().startswith("dit_engine plan: adapter 'tiny'")
    assert len(list((tmp_path / "run" / "images").glob("*.png"))) == 2


class LoadTime(Transform):
    name = "quantize.load_time"
    stage = Stage.QUANTIZE

    @classmethod
    def load_kwargs(cls, config):
        return {"quantization_config": "q"}


class LoadTimeRival(LoadTime):
    name = "compile.rival"
    stage = Stage.COMPILE


def test_load_time_arguments_reach_the_adapter_and_conflicts_are_plan_errors(monkeypatch):
    from dit_engine.plan import Plan, PlanStep, _load_time_conflicts
    from dit_engine.registry import Provider

    session = Session.from_overrides(["workload=smoke"]).prepare()
    provider = Provider("t", "t", "t", "0")
    step = PlanStep(Stage.QUANTIZE, LoadTime.name, LoadTime, None, "quant", provider)
    session.plan = Plan(steps=(step,) + session.plan.steps, adapter=session.adapter, model_info=session.plan.model_info)
    seen = {}
    monkeypatch.setattr(type(session.adapter), "load", lambda self, model_cfg, dtype, load_kwargs: seen.update(load_kwargs) or _Stub())
    session.load()
    assert seen == {"quantization_config": "q"}
    rival = PlanStep(Stage.COMPILE, LoadTimeRival.name, LoadTimeRival, None, "compile", provider)
    assert _load_time_conflicts([step, rival]) == [
        "quantize.load_time and compile.rival both set from_pretrained's quantization_config; choose one of them"
    ]


class _Stub:
    def to(self, device):
        return self

    def set_progress_bar_config(self, **kwargs):
        pass
