"""dit_engine.apply: errors a user can hit, and the handle's contract."""

from __future__ import annotations

import pytest
import torch

import dit_engine
from dit_engine import AlreadyAppliedError, ConfigError, PlanError, UnsupportedPipelineError


def test_apply_twice_without_remove_is_refused(tiny_pipe):
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache")
    try:
        with pytest.raises(AlreadyAppliedError, match="call handle.remove\\(\\) first"):
            dit_engine.apply(tiny_pipe, "cache=fbcache")
    finally:
        handle.remove()
    dit_engine.apply(tiny_pipe, "cache=fbcache").remove()  # fine after remove


def test_unsupported_pipeline_is_a_clear_exception():
    class NotADiTPipeline:
        transformer = torch.nn.Linear(2, 2)

    with pytest.raises(UnsupportedPipelineError, match="no installed adapter serves NotADiTPipeline"):
        dit_engine.apply(NotADiTPipeline(), "cache=dbcache")


def test_forcing_the_wrong_adapter_is_refused(tiny_pipe):
    with pytest.raises(UnsupportedPipelineError, match="adapter 'flux' does not serve TinyDiTPipeline"):
        dit_engine.apply(tiny_pipe, "model=flux")


def test_bad_overrides_raise_config_and_plan_errors(tiny_pipe):
    with pytest.raises(ConfigError, match="unknown key cache.treshold"):
        dit_engine.apply(tiny_pipe, "cache=dbcache", "cache.treshold=0.1")
    with pytest.raises(PlanError, match="cache.threshold=-1.0 must be >= 0"):
        dit_engine.apply(tiny_pipe, "cache=dbcache", "cache.threshold=-1")
    assert not hasattr(tiny_pipe, "_dit_engine_handle")


def test_summary_keys_and_reset(tiny_pipe):
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache")
    try:
        tiny_pipe(prompt=["four"], num_inference_steps=10, output_type="pt")
        summary = handle.summary()
        for key in ("blocks_computed", "blocks_total", "steps_cached", "steps_total"):
            assert isinstance(summary[key], int)
        assert summary["steps_total"] == 10 and summary["blocks_total"] == 120
        handle.reset()
        assert handle.summary()["steps_total"] == 0 and handle.summary()["blocks_total"] == 0
    finally:
        handle.remove()


def test_cache_none_counts_blocks_without_hooking_them(tiny_pipe):
    handle = dit_engine.apply(tiny_pipe)
    try:
        tiny_pipe(prompt=["four"], num_inference_steps=5, output_type="pt")
        summary = handle.summary()
        assert not hasattr(tiny_pipe.transformer.transformer_blocks[1], "_diffusers_hook")
    finally:
        handle.remove()
    assert summary["blocks_computed"] == summary["blocks_total"] == 60
