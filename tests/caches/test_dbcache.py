"""DBCache on the embedded tiny model and on a tiny FLUX pipeline built in the test.

Checks: fewer block forwards, PSNR vs uncached reported, exact equality at threshold 0,
``remove()`` restores identical outputs, no state leaks between successive requests.
"""

from __future__ import annotations

import json

import pytest
import torch

import dit_engine
from conftest import psnr
from dit_engine.testing import tiny_flux_call_kwargs

TINY_PROMPTS = ["zero", "three", "seven", "eight"]


def tiny_call(prompts=TINY_PROMPTS, seed=0):
    return dict(
        prompt=list(prompts),
        num_inference_steps=28,
        generator=[torch.Generator().manual_seed(seed + i) for i in range(len(prompts))],
        output_type="pt",
    )


def run_tiny(pipe, **kwargs):
    return pipe(**tiny_call(**kwargs)).images


def test_tiny_threshold_zero_is_identical_to_plain(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache", "cache.threshold=0")
    try:
        cached = run_tiny(tiny_pipe)
        summary = handle.summary()
    finally:
        handle.remove()
    assert torch.equal(reference, cached)
    assert summary["blocks_computed"] == summary["blocks_total"] == 28 * 12
    assert summary["steps_cached"] == 0


@pytest.mark.parametrize("preset", ["dbcache", "fbcache"])
def test_tiny_cache_skips_blocks_and_keeps_quality(tiny_pipe, preset):
    reference = run_tiny(tiny_pipe)
    handle = dit_engine.apply(tiny_pipe, f"cache={preset}")
    try:
        cached = run_tiny(tiny_pipe)
        summary = handle.summary()
    finally:
        handle.remove()
    quality = psnr(reference, cached)
    print(f"{preset}: compute fraction {summary['compute_fraction']:.3f}, hit ratio {summary['hit_ratio']:.3f}, PSNR {quality:.2f} dB")
    assert summary["blocks_computed"] < summary["blocks_total"]
    assert summary["steps_cached"] > 0
    assert quality >= 30.0
    json.dumps(summary)  # JSON-serialisable


def test_remove_restores_identical_outputs_and_modules(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    blocks = list(tiny_pipe.transformer.transformer_blocks) + list(tiny_pipe.transformer.single_transformer_blocks)
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache", "cache.threshold=0.5")
    assert not torch.equal(run_tiny(tiny_pipe), reference)  # the cache really changed the computation
    handle.remove()
    assert torch.equal(run_tiny(tiny_pipe), reference)
    for module in [tiny_pipe.transformer, *blocks]:
        # The pipeline's own cache_context may create an empty diffusers registry; no hook of ours remains.
        registry = getattr(module, "_diffusers_hook", None)
        assert registry is None or not registry.hooks
        assert "forward" not in module.__dict__
    assert "step" not in tiny_pipe.scheduler.__dict__ and "set_timesteps" not in tiny_pipe.scheduler.__dict__
    handle.remove()  # twice is harmless


def test_no_state_leaks_between_requests(tiny_pipe):
    """Two successive calls with different prompts equal two fresh runs."""
    overrides = ("cache=dbcache", "cache.threshold=0.15")
    fresh = []
    for prompts in (["one", "two"], ["five", "nine"]):
        handle = dit_engine.apply(tiny_pipe, *overrides)
        fresh.append(run_tiny(tiny_pipe, prompts=prompts))
        handle.remove()
    handle = dit_engine.apply(tiny_pipe, *overrides)
    try:
        successive = [run_tiny(tiny_pipe, prompts=p) for p in (["one", "two"], ["five", "nine"])]
        masks = handle.summary()["transforms"]["cache.dbcache"]["branches"]["transformer/cfg0"]["masks"]
    finally:
        handle.remove()
    assert torch.equal(fresh[0], successive[0]) and torch.equal(fresh[1], successive[1])
    assert len(masks) == 2 and all(len(m) == 28 for m in masks)


def test_limits_are_respected(tiny_pipe):
    handle = dit_engine.apply(
        tiny_pipe, "cache=dbcache", "cache.threshold=10", "cache.max_cached_steps=5", "cache.max_continuous_cached_steps=2",
        "cache.warmup_steps=3",
    )
    try:
        run_tiny(tiny_pipe)
        mask = handle.summary()["transforms"]["cache.dbcache"]["branches"]["transformer/cfg0"]["masks"][0]
    finally:
        handle.remove()
    assert mask.startswith("111")
    assert mask.count("0") == 5
    assert "000" not in mask


def test_separate_cfg_branches_keep_separate_state(tiny_pipe):
    kwargs = dict(guidance_scale=2.0)
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache")
    try:
        separate = tiny_pipe(**tiny_call(), separate_cfg=True, **kwargs).images
        branches = handle.summary()["transforms"]["cache.dbcache"]["branches"]
    finally:
        handle.remove()
    assert set(branches) == {"transformer/cfg0", "transformer/cfg1"}
    assert all(b["steps_computed"] + b["steps_cached"] == 28 for b in branches.values())
    reference = tiny_pipe(**tiny_call(), separate_cfg=True, **kwargs).images
    assert psnr(reference, separate) >= 25.0


def test_flux_threshold_zero_identical_and_cache_skips(tiny_flux):
    reference = tiny_flux(**tiny_flux_call_kwargs()).images
    handle = dit_engine.apply(tiny_flux, "cache=dbcache", "cache.threshold=0")
    same = tiny_flux(**tiny_flux_call_kwargs()).images
    handle.remove()
    assert torch.equal(reference, same)

    handle = dit_engine.apply(tiny_flux, "cache=fbcache", "cache.threshold=0.5", "cache.warmup_steps=1")
    try:
        cached = tiny_flux(**tiny_flux_call_kwargs()).images
        summary = handle.summary()
    finally:
        handle.remove()
    print(f"tiny FLUX fbcache: compute fraction {summary['compute_fraction']:.3f}, PSNR {psnr(reference, cached):.2f} dB")
    lists = summary["transforms"]["cache.dbcache"]["block_lists"]
    assert set(lists) == {"transformer.transformer_blocks", "transformer.single_transformer_blocks"}
    assert summary["blocks_computed"] < summary["blocks_total"]
    # both FLUX block lists are one sequence: the single-stream list is skipped too
    assert lists["transformer.single_transformer_blocks"]["computed"] < lists["transformer.single_transformer_blocks"]["total"]
    assert torch.isfinite(cached).all()
    assert torch.equal(tiny_flux(**tiny_flux_call_kwargs()).images, reference)
