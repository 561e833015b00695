"""The first-party adapters and cache options through the public conformance suites
(``dit_engine.testing.conformance``), exactly as a plugin's tests use them."""

from __future__ import annotations

import pytest
import torch

from dit_engine.testing.conformance import AdapterConformance, PipelineCase, TransformConformance, tiny_model_case
from dit_engine.testing import (
    build_tiny_flux_pipeline,
    build_tiny_qwen_image_pipeline,
    build_tiny_wan_pipeline,
    tiny_flux_call_kwargs,
    tiny_qwen_image_call_kwargs,
    tiny_wan_call_kwargs,
)

STEPS = 6


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TestTinyAdapter(AdapterConformance):
    adapter_name = "tiny"

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls):
        return tiny_model_case(STEPS)


class TestFluxAdapter(AdapterConformance):
    adapter_name = "flux"

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls):
        # FLUX.1-dev is guidance-distilled: one call per step; true CFG makes two.
        return PipelineCase(_quiet(build_tiny_flux_pipeline(seed=0)), lambda: tiny_flux_call_kwargs(num_inference_steps=STEPS),
                            cfg_call=lambda: tiny_flux_call_kwargs(num_inference_steps=STEPS, negative_prompt="blurry", true_cfg_scale=3.0))


class TestWanAdapter(AdapterConformance):
    adapter_name = "wan"

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls):
        return PipelineCase(_quiet(build_tiny_wan_pipeline(seed=0)), lambda: tiny_wan_call_kwargs(num_inference_steps=STEPS, guidance_scale=1.0),
                            cfg_call=lambda: tiny_wan_call_kwargs(num_inference_steps=STEPS))


class TestQwenImageAdapter(AdapterConformance):
    adapter_name = "qwen_image"

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls):
        return PipelineCase(_quiet(build_tiny_qwen_image_pipeline(seed=0)),
                            lambda: tiny_qwen_image_call_kwargs(num_inference_steps=STEPS, true_cfg_scale=1.0),
                            cfg_call=lambda: tiny_qwen_image_call_kwargs(num_inference_steps=STEPS))


#: option -> (overrides, exact overrides or None, skips blocks on the tiny model at 6 steps)
FIRST_PARTY_CACHES = {
    "dbcache": (("cache=dbcache", "cache.threshold=0.5", "cache.warmup_steps=1"), ("cache=dbcache", "cache.threshold=0"), True),
    "dbcache_taylorseer": (("cache=dbcache", "cache.threshold=0.5", "cache.warmup_steps=1", "calibrator=taylorseer"),
                           ("cache=dbcache", "cache.threshold=0", "calibrator=taylorseer"), True),
    "scm_static": (("cache=scm_static",), ("cache=scm_static", "cache.mask=1"), True),
    "scm_static_abcache": (("cache=scm_static", "calibrator=abcache"), ("cache=scm_static", "cache.mask=1", "calibrator=abcache"), True),
    "scm_static_spectrum": (("cache=scm_static", "calibrator=spectrum"), ("cache=scm_static", "cache.mask=1", "calibrator=spectrum"), True),
    "dbcache_spectrum": (("cache=dbcache", "cache.threshold=0.5", "cache.warmup_steps=1", "calibrator=spectrum"),
                         ("cache=dbcache", "cache.threshold=0", "calibrator=spectrum"), True),
    "plan_steps": (("cache=plan_steps", "calibrator=spectrum"), ("cache=plan_steps",), False),
    "dbprune": (("cache=dbprune", "cache.threshold=0.5", "cache.warmup_steps=1"), ("cache=dbprune", "cache.threshold=0"), True),
    "teacache": (("cache=teacache", "cache.threshold=2"), ("cache=teacache", "cache.threshold=0"), True),
    "magcache": (("cache=magcache", "cache.threshold=2"), ("cache=magcache", "cache.threshold=0"), True),
    "fit_signals": (("cache=fit_signals",), ("cache=fit_signals",), False),
}

for _option, (_overrides, _exact, _skips) in FIRST_PARTY_CACHES.items():
    globals()[f"TestCache_{_option}"] = type(f"TestCache_{_option}", (TransformConformance,), {
        "overrides": _overrides,
        "exact_overrides": _exact,
        "skips_blocks": _skips,
        "case": pytest.fixture(scope="class")(classmethod(lambda cls: tiny_model_case(STEPS))),
    })
