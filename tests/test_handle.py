"""The handle's lifecycle: apply undoes itself on failure, remove refuses irreversible plans
before touching anything, and a pipeline carries one plan at a time."""

from __future__ import annotations

import pytest
import torch

import dit_engine
from dit_engine.errors import AlreadyAppliedError, IrreversiblePlanError
from dit_engine.handle import Handle
from dit_engine.plan import Plan, PlanStep, Stage
from dit_engine.registry import Provider
from dit_engine.transforms.base import Lifecycle, Transform
from dit_engine.testing.conformance import module_structure

PROVIDER = Provider("test", "tests", "tests", "0")


class Marker(Transform):
    """Sets an attribute on the transformer; irreversible variants cannot take it back."""

    name = "compile.marker"
    stage = Stage.COMPILE

    def apply(self, pipe, context):
        pipe.transformer.__dict__[self.name] = True

    def remove(self, pipe):
        del pipe.transformer.__dict__[self.name]


class IrreversibleMarker(Marker):
    name = "quantize.marker"
    stage = Stage.QUANTIZE
    lifecycle = Lifecycle(reversible=False)


class Broken(Transform):
    name = "compile.broken"
    stage = Stage.COMPILE

    def apply(self, pipe, context):
        raise RuntimeError("broken on purpose")


def plan_with(base: Plan, *classes) -> Plan:
    steps = base.steps + tuple(PlanStep(c.stage, c.name, c, None, None, PROVIDER) for c in classes)
    return Plan(steps=tuple(sorted(steps, key=lambda s: s.stage)), adapter=base.adapter, model_info=base.model_info)


@pytest.fixture
def base_plan(tiny_pipe):
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache")
    handle.remove()
    return handle.plan


def test_remove_refuses_an_irreversible_plan_and_changes_nothing(tiny_pipe, base_plan):
    handle = Handle(tiny_pipe, plan_with(base_plan, IrreversibleMarker, Marker)).apply()
    try:
        with pytest.raises(IrreversiblePlanError, match="quantize.marker changed the pipeline irreversibly; load the pipeline again"):
            handle.remove()
        # nothing was removed, not even the reversible steps
        assert {"quantize.marker", "compile.marker"} <= set(vars(tiny_pipe.transformer))
        assert handle.applied
    finally:
        for transform in reversed(handle.transforms):
            transform.remove(tiny_pipe)
        del tiny_pipe._dit_engine_handle


def test_a_failing_step_undoes_the_steps_before_it(tiny_pipe, base_plan):
    before = module_structure(tiny_pipe)
    with pytest.raises(RuntimeError, match="broken on purpose"):
        Handle(tiny_pipe, plan_with(base_plan, Marker, Broken)).apply()
    assert "compile.marker" not in vars(tiny_pipe.transformer)
    assert module_structure(tiny_pipe) == before
    assert getattr(tiny_pipe, "_dit_engine_handle", None) is None


def test_one_plan_at_a_time(tiny_pipe):
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache")
    try:
        with pytest.raises(AlreadyAppliedError, match="call handle.remove"):
            dit_engine.apply(tiny_pipe, "cache=fbcache")
    finally:
        handle.remove()
    handle.remove()  # twice is fine


def test_plan_explains_lifecycle(base_plan):
    text = plan_with(base_plan, IrreversibleMarker).explain()
    assert "quantize.marker" in text and "; irreversible]" in text
