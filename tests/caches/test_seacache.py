"""SeaCache (``cache=seacache``) on the embedded tiny model, tiny FLUX and tiny Wan; the peer
``cache=diffusers_seacache`` beside it; the SEA filter; bad settings as one-line errors."""

from __future__ import annotations

import contextlib

import pytest
import torch

import dit_engine
from conftest import prepare, psnr
from dit_engine.caches.seacache import sea_filter
from dit_engine.config import compose_config
from dit_engine.errors import DitEngineError, PlanError
from dit_engine.testing import build_tiny_wan_pipeline, tiny_flux_call_kwargs, tiny_wan_call_kwargs
from test_cache_methods import apply_and_run, cache_stats
from test_dbcache import run_tiny


def mask_of(summary, branch="transformer/cfg0"):
    return cache_stats(summary)["branches"][branch]["masks"][0]


@pytest.mark.parametrize("shape", [(2, 64, 5), (2, 60, 5), (2, 3, 8, 6), (1, 3, 4, 8, 6)])
def test_sea_filter_keeps_the_latent_at_zero_noise_and_damps_fine_detail_at_high_noise(shape):
    latent = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sea_filter(latent, 0.0, 3.0), latent, atol=1e-4)  # clean: the Wiener gain is 1
    noisy = sea_filter(latent, 0.9, 3.0)
    assert noisy.shape == latent.shape and noisy.dtype == torch.float32
    # at high noise a +-1 alternation along a filtered axis (the token sequence of (B, L, D), W
    # otherwise) keeps under a fifth of the gain of a constant field
    smooth = torch.ones(shape)
    alternating = smooth.cumsum(1 if len(shape) == 3 else -1).remainder(2) * 2 - 1
    ratio = sea_filter(alternating, 0.9, 3.0).abs().mean() / sea_filter(smooth, 0.9, 3.0).abs().mean()
    assert ratio < 0.2


def test_threshold_zero_is_identical_to_no_cache(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    output, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=seacache", "cache.threshold=0")
    assert torch.equal(reference, output)
    assert summary["steps_cached"] == 0 and summary["compute_fraction"] == 1.0


def test_default_threshold_caches_steps_and_composes_with_calibrators(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    output, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=seacache")
    reuse, reuse_summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=seacache", "cache.residual_order=0")
    taylor, taylor_summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=seacache", "calibrator=taylorseer")
    quality = psnr(reference, output)
    print(f"seacache: compute fraction {summary['compute_fraction']:.3f}, PSNR {quality:.2f} dB (order 0: {psnr(reference, reuse):.2f} dB)")
    mask = mask_of(summary)
    assert mask[0] == mask[-1] == "1" and "000" not in mask  # retention, end step, at most 2 cached in a row
    assert summary["compute_fraction"] < 0.6
    assert summary["blocks_computed"] == mask.count("1") * 12 * 1  # a cached step runs no block
    assert quality > 45.0
    # the decisions do not depend on the residual prediction; order 1 extrapolates better than reuse
    assert mask_of(reuse_summary) == mask_of(taylor_summary) == mask
    assert quality > psnr(reference, reuse) + 5.0
    # TaylorSeer order 1 is the same linear extrapolation as residual_order=1
    assert psnr(output, taylor) > 80.0


def test_same_decisions_and_images_as_diffusers_seacache_given_the_step_metadata(tiny_pipe):
    """diffusers' SeaCache, fed the step index, sigma and step count the tiny pipeline does not
    pass (and our square-grid view of its packed latent), takes the same decisions."""

    def run():
        return tiny_pipe(prompt=["three"], num_inference_steps=28, generator=torch.Generator().manual_seed(0), output_type="pt").images

    ours, summary = apply_and_run(tiny_pipe, run, "cache=seacache")

    from diffusers.hooks import SeaCacheConfig

    transformer = tiny_pipe.transformer

    def grid_latents(module, args, kwargs):  # (B, L, D) -> per sample (D, T=1, sqrt L, sqrt L)
        x = kwargs["hidden_states"]
        side = int(x.shape[1] ** 0.5)
        return [sample.reshape(side, side, -1).permute(2, 0, 1).unsqueeze(1) for sample in x]

    original = transformer.cache_context

    @contextlib.contextmanager
    def cache_context(name):
        scheduler = tiny_pipe.scheduler
        step = scheduler.step_index or 0
        with original(name, step_index=step, sigma=float(scheduler.sigmas[step]), num_inference_steps=len(scheduler.timesteps)):
            yield

    computed = []
    counter = transformer.transformer_blocks[0].ff.register_forward_pre_hook(lambda *a: computed.append(1))
    transformer.enable_cache(SeaCacheConfig(raw_vision_callback=grid_latents))
    transformer.cache_context = cache_context
    try:
        peer = run()
    finally:
        del transformer.cache_context
        transformer.disable_cache()
        counter.remove()
    assert len(computed) == mask_of(summary).count("1") < 28
    assert psnr(ours, peer) > 80.0


def test_tiny_flux_caches_where_diffusers_seacache_runs_fail_open(tiny_flux):
    run = lambda: tiny_flux(**tiny_flux_call_kwargs()).images  # noqa: E731
    reference = run()
    output, summary = apply_and_run(tiny_flux, run, "cache=seacache")
    print(f"tiny FLUX seacache: compute fraction {summary['compute_fraction']:.3f}, PSNR {psnr(reference, output):.2f} dB")
    assert summary["compute_fraction"] < 1.0 and psnr(reference, output) > 40.0
    peer, peer_summary = apply_and_run(tiny_flux, run, "cache=diffusers_seacache")
    assert peer_summary["compute_fraction"] == 1.0  # no step metadata in FluxPipeline's cache_context
    assert torch.equal(peer, reference)
    assert torch.equal(run(), reference)


def test_video_latents_and_separate_cfg_branches_on_tiny_wan():
    pipe = build_tiny_wan_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    run = lambda: torch.as_tensor(pipe(**tiny_wan_call_kwargs()).frames)  # noqa: E731
    reference = run()
    output, summary = apply_and_run(pipe, run, "cache=seacache", "cache.threshold=0.5")
    branches = cache_stats(summary)["branches"]
    assert set(branches) == {"transformer/cfg0", "transformer/cfg1"}
    # cond and uncond see the same latent, so the same indicator and decisions
    assert branches["transformer/cfg0"]["masks"] == branches["transformer/cfg1"]["masks"]
    assert summary["compute_fraction"] < 1.0
    assert output.shape == reference.shape and torch.isfinite(output).all()


def test_remove_restores_outputs_and_hooks(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    pre_hooks = dict(tiny_pipe.transformer._forward_pre_hooks)
    handle = dit_engine.apply(tiny_pipe, "cache=seacache", "cache.threshold=0.5")
    assert not torch.equal(run_tiny(tiny_pipe), reference)
    handle.remove()
    assert dict(tiny_pipe.transformer._forward_pre_hooks) == pre_hooks
    assert torch.equal(run_tiny(tiny_pipe), reference)


def test_a_call_without_noise_levels_is_a_one_line_error(tiny_pipe):
    captured = {}

    def capture(module, args, kwargs):
        captured.setdefault("kwargs", kwargs)

    hook = tiny_pipe.transformer.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        run_tiny(tiny_pipe, prompts=["one"])
    finally:
        hook.remove()
    handle = dit_engine.apply(tiny_pipe, "cache=seacache")
    try:
        with pytest.raises(DitEngineError) as info:
            tiny_pipe.transformer(**captured["kwargs"])  # outside a pipeline: no scheduler, no sigma
    finally:
        handle.remove()
    assert "cache=seacache needs each step's noise level" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "override,expected",
    [
        ("cache.threshold=-0.1", "cache.threshold=-0.1 must be >= 0"),
        ("cache.threshold=nan", "cache.threshold=nan is not a finite number"),
        ("cache.residual_order=2", "cache.residual_order=2: use 0"),
        ("cache.retention_steps=-1", "cache.retention_steps=-1 is negative"),
        ("cache.cache_end_steps=-2", "cache.cache_end_steps=-2 is negative"),
        ("cache.max_consecutive_cached=-1", "cache.max_consecutive_cached=-1 is negative"),
        ("cache.power_exp=0", "cache.power_exp=0.0 must be a positive number"),
    ],
)
@pytest.mark.parametrize("option", ["seacache", "diffusers_seacache"])
def test_bad_settings_are_one_line_plan_errors(option, override, expected):
    with pytest.raises(PlanError) as info:
        prepare(compose_config([f"cache={option}", override, "dry_run=true"]))
    assert expected in str(info.value) and "\n" not in str(info.value)
