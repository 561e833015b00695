"""attention=: diffusers' attention dispatch backend, set for the run and put back by remove()."""

from __future__ import annotations

import pytest

import dit_engine
from dit_engine.errors import PlanError
from dit_engine.testing import conformance
from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs


def fresh():
    pipe = build_tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def backends(pipe) -> set:
    return {getattr(m.processor, "_attention_backend", None) for m in pipe.transformer.modules() if hasattr(m, "processor")}


def test_a_backend_is_set_for_the_run_and_put_back_by_remove():
    pipe = fresh()
    plain = conformance.run(pipe, tiny_flux_call_kwargs())
    handle = dit_engine.apply(pipe, "attention=native", "attention.backend=_native_math", "cache=dbcache")
    assert {str(b) for b in backends(pipe)} == {"AttentionBackendName._NATIVE_MATH"}
    math_output = conformance.run(pipe, tiny_flux_call_kwargs())
    assert float((math_output - plain).abs().max()) < 1e-5  # the same attention, another kernel
    assert handle.summary()["transforms"]["adapt.attention_backend"]["modules"] == 6
    handle.remove()
    assert backends(pipe) == {None}
    assert float((conformance.run(pipe, tiny_flux_call_kwargs()) - plain).abs().max()) == 0.0


@pytest.mark.parametrize("overrides,expected", [
    (["attention=flash"], "attention.backend=flash is not available here: Flash Attention backend 'flash' is not usable"),
    (["attention=native", "attention.backend=_native_cudnn"], "attention.backend=_native_cudnn needs a CUDA GPU; on the CPU use one of native, _native_math, flex"),
    (["attention=native", "attention.backend=flex", "parallel=ulysses2"], "bypasses the scaled-dot-product attention that context parallelism distributes"),
])
def test_unavailable_backends_are_refused_at_plan_time(overrides, expected):
    with pytest.raises(PlanError) as info:
        dit_engine.apply(fresh(), *overrides)
    assert expected in str(info.value)
