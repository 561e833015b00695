"""Cache methods beyond plain DBCache: presets, SCM step masks, TaylorSeer, CFG branches,
and the same caches on tiny Wan (separate CFG calls) and Qwen-Image pipelines."""

from __future__ import annotations

import json
import math

import pytest
import torch

import dit_engine
from conftest import psnr
from dit_engine.calibrators.taylorseer import TaylorSeerForecaster
from dit_engine.caches.scm import flags_to_string, preset_flags, resample
from dit_engine.config import compose_config, group_options
from conftest import prepare, with_peer_marks
from dit_engine.errors import PlanError
from dit_engine.testing import (
    tiny_flux_call_kwargs,
    build_tiny_qwen_image_pipeline,
    build_tiny_wan_pipeline,
    tiny_qwen_image_call_kwargs,
    tiny_wan_call_kwargs,
)
from test_dbcache import run_tiny


def apply_and_run(pipe, run, *overrides):
    handle = dit_engine.apply(pipe, *overrides)
    try:
        output = run()
        return output, handle.summary()
    finally:
        handle.remove()


def cache_stats(summary):
    return next(v for k, v in summary["transforms"].items() if k.startswith("cache."))


@pytest.mark.parametrize("steps", [8, 28, 50])
@pytest.mark.parametrize("preset,fraction", [("slow", 0.60), ("medium", 0.40), ("fast", 0.33), ("ultra", 0.25)])
def test_scm_presets_scale_with_the_step_count(steps, preset, fraction):
    flags = preset_flags(preset, steps)
    assert len(flags) == steps and flags[0]  # the first step always computes
    assert abs(sum(flags) / steps - fraction) <= 1 / steps + 0.02
    computed = [i for i, f in enumerate(flags) if f]
    gaps = [b - a for a, b in zip(computed, computed[1:])]
    assert max(gaps) - min(gaps) <= 1  # evenly spread
    assert steps - 1 - computed[-1] <= max(1, round(steps / len(computed) ** 2))  # up to the end


def test_explicit_masks_are_resampled_proportionally():
    assert flags_to_string(resample("1100", 8)) == "11110000"
    assert flags_to_string(resample("10101010", 4)) == "1111"
    assert flags_to_string(resample("1001", 4)) == "1001"


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["cache=scm", "cache.mask=11x0"], "cache.mask=11x0 has characters other than 0 and 1"),
        (["cache=scm", "cache.front_blocks=0"], "cache.policy=dynamic decides from the front blocks' residual"),
        (["cache=dbcache", "cache.front_blocks=0"], "use cache.front_blocks=1 (or cache=scm_static"),
        (["cache=dbcache", "calibrator=taylorseer", "calibrator.order=-1"], "calibrator.order=-1: use 1, 2 or 3"),
        (["cache=dbcache", "calibrator=taylorseer", "calibrator.order=4"], "calibrator.order=4: use 1, 2 or 3"),
    ],
)
def test_bad_cache_settings_are_plan_errors(overrides, expected):
    with pytest.raises(PlanError) as info:
        prepare(compose_config(overrides))
    assert expected in str(info.value)


def test_presets_resolve_from_the_model_default():
    thresholds = {
        option: prepare(compose_config([f"cache={option}"])).plan.steps[-1].config.threshold
        for option in ("dbcache", "dbcache_fast", "dbcache_slow")
    }
    assert thresholds == pytest.approx({"dbcache": 0.2, "dbcache_fast": 0.3, "dbcache_slow": 0.1})
    assert prepare(compose_config(["cache=dbcache_fast", "cache.threshold=0.05"])).plan.steps[-1].config.threshold == 0.05


def _forecast(order: int, values: dict[int, float], at: int) -> float:
    forecaster = TaylorSeerForecaster(order=order, warmup=order + 1)
    history = None
    for step, value in values.items():
        history = forecaster.update(history, torch.tensor([value]), step)
    return forecaster.forecast(history, at).item()


def test_taylorseer_forecaster():
    line = {0: 1.0, 3: 7.0}  # 2 s + 1
    assert _forecast(1, line, 5) == pytest.approx(11.0)  # first order is exact on a line
    quadratic = {s: 3.0 * s * s - s + 1 for s in (0, 2, 4)}
    truth = 3 * 25 - 5 + 1
    # backward differences: 45 + 17 (first order) and + 6/2 (second order) at k = 1
    assert _forecast(1, quadratic, 5) == pytest.approx(62.0)
    assert _forecast(2, quadratic, 5) == pytest.approx(65.0)
    assert abs(_forecast(2, quadratic, 5) - truth) < abs(_forecast(1, quadratic, 5) - truth)
    assert TaylorSeerForecaster(2, warmup=5).forecast(
        TaylorSeerForecaster(2, 5).update(None, torch.tensor([4.0]), 0), 3
    ).item() == 4.0  # before warmup: plain reuse


def test_scm_all_compute_mask_is_identical_to_no_cache(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    output, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm", "cache.mask=1", "cache.policy=static")
    assert torch.equal(reference, output)
    assert summary["steps_cached"] == 0


def test_scm_static_follows_its_mask_exactly(tiny_pipe):
    _, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static", "cache.preset=fast")
    mask = cache_stats(summary)["branches"]["transformer/cfg0"]["masks"][0]
    assert mask == flags_to_string(preset_flags("fast", 28))
    # F0B0: no block runs on a cached step
    assert summary["blocks_computed"] == mask.count("1") * 12 * 1


def test_calibrator_raises_psnr_at_the_same_compute(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    for cache in ("cache=dbcache", "cache=scm_static"):
        plain, plain_summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), cache)
        forecast, forecast_summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), cache, "calibrator=taylorseer")
        assert forecast_summary["blocks_computed"] == plain_summary["blocks_computed"]
        assert psnr(reference, forecast) > psnr(reference, plain) + 2.0, cache


def test_step_level_forecasting_is_fast_and_faithful(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    output, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static", "calibrator=taylorseer")
    assert summary["compute_fraction"] < 0.35
    assert psnr(reference, output) > 38.0


def test_shared_cfg_decision_keeps_branches_in_step(tiny_pipe):
    def run():
        return tiny_pipe(prompt=["two", "six"], num_inference_steps=20, guidance_scale=2.0, separate_cfg=True, output_type="pt",
                         generator=[torch.Generator().manual_seed(i) for i in range(2)]).images

    _, summary = apply_and_run(tiny_pipe, run, "cache=dbcache", "cache.separate_cfg=false")
    branches = cache_stats(summary)["branches"]
    assert branches["transformer/cfg0"]["masks"] == branches["transformer/cfg1"]["masks"]
    assert branches["transformer/cfg0"]["steps_cached"] > 0


@pytest.fixture(scope="module")
def tiny_wan():
    pipe = build_tiny_wan_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("overrides", [("cache=dbcache",), ("cache=fbcache",), ("cache=dbprune",), ("cache=scm", "cache.preset=fast"),
                                       ("cache=scm_static", "calibrator=taylorseer"), ("cache=dbcache", "calibrator=taylorseer")])
def test_wan_separate_cfg_keeps_state_per_branch(tiny_wan, overrides):
    reference = tiny_wan(**tiny_wan_call_kwargs()).frames
    output, summary = apply_and_run(tiny_wan, lambda: tiny_wan(**tiny_wan_call_kwargs()).frames, *overrides, "cache.threshold=0.5")
    stats = cache_stats(summary)
    assert set(stats["branches"]) == {"transformer/cfg0", "transformer/cfg1"}  # cond and uncond calls
    assert all(b["steps_computed"] + b["steps_cached"] == 8 for b in stats["branches"].values())
    assert summary["blocks_computed"] < summary["blocks_total"]
    assert torch.isfinite(torch.as_tensor(output)).all()
    assert torch.as_tensor(output).shape == torch.as_tensor(reference).shape


def test_wan_threshold_zero_is_identical(tiny_wan):
    reference = tiny_wan(**tiny_wan_call_kwargs()).frames
    output, _ = apply_and_run(tiny_wan, lambda: tiny_wan(**tiny_wan_call_kwargs()).frames, "cache=dbcache", "cache.threshold=0")
    assert torch.equal(torch.as_tensor(reference), torch.as_tensor(output))


@pytest.mark.parametrize("overrides", [("cache=dbcache",), ("cache=scm_static", "calibrator=taylorseer")])
def test_qwen_image_caches_per_cfg_branch(overrides):
    pipe = build_tiny_qwen_image_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(**tiny_qwen_image_call_kwargs()).images
    output, summary = apply_and_run(pipe, lambda: pipe(**tiny_qwen_image_call_kwargs()).images, *overrides, "cache.threshold=0.5")
    assert set(cache_stats(summary)["branches"]) == {"transformer/cfg0", "transformer/cfg1"}
    assert summary["blocks_computed"] < summary["blocks_total"]
    assert output.shape == reference.shape and torch.isfinite(output).all()


def test_dbprune_threshold_zero_is_identical_and_default_prunes(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    same, _ = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=dbprune", "cache.threshold=0")
    assert torch.equal(reference, same)
    output, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=dbprune")
    stats = cache_stats(summary)
    per_step = stats["branches"]["transformer/cfg0"]["middle_blocks_computed_per_step"][0]
    assert len(per_step) == 28 and per_step[:2] == [10, 10]  # warmup: every middle block (12 - F1 - B1) runs
    assert summary["compute_fraction"] < 0.7
    assert psnr(reference, output) > 33.0
    # the first (front) and last (back) blocks are never pruned
    lists = stats["block_lists"]
    assert lists["transformer.transformer_blocks"]["computed"] >= 28
    assert lists["transformer.single_transformer_blocks"]["computed"] >= 28


def test_calibrator_refuses_a_cache_it_cannot_bind_to():
    with pytest.raises(PlanError, match="calibrator=taylorseer cannot bind to cache.dbprune"):
        prepare(compose_config(["cache=dbprune", "calibrator=taylorseer"]))


@pytest.mark.parametrize("overrides", [("cache=diffusers_fbc", "cache.threshold=0.2"), ("cache=diffusers_taylorseer",)])
def test_peers_run_as_cache_options_and_count_real_block_forwards(tiny_pipe, overrides):
    reference = run_tiny(tiny_pipe)
    output, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), *overrides)
    stats = cache_stats(summary)
    assert 0 < stats["blocks_computed"] < stats["blocks_total"] == 28 * 12
    assert summary["blocks_computed"] == stats["blocks_computed"]
    assert 25.0 < psnr(reference, output) < float("inf")
    assert torch.equal(run_tiny(tiny_pipe), reference)  # removed: back to plain


def test_fbcache_matches_diffusers_first_block_cache(tiny_pipe):
    ours, _ = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=fbcache", "cache.threshold=0.2", "cache.warmup_steps=0")
    peer, _ = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=diffusers_fbc", "cache.threshold=0.2")
    assert psnr(peer, ours) > 60.0  # the same algorithm: same decisions, same images


def test_model_level_skip_runs_nothing_on_cached_steps(tiny_pipe):
    calls = []
    hook = tiny_pipe.transformer.x_embedder.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        _, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static", "calibrator=taylorseer")
    finally:
        hook.remove()
    mask = cache_stats(summary)["branches"]["transformer/cfg0"]["masks"][0]
    assert len(calls) == mask.count("1") < 28  # the embedder ran only on computed steps
    assert summary["steps_total"] == 28


@pytest.mark.parametrize("cache", ["teacache", "magcache"])
def test_whole_step_caches_on_the_tiny_model(tiny_pipe, cache):
    reference = run_tiny(tiny_pipe)
    same, _ = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), f"cache={cache}", "cache.threshold=0")
    assert torch.equal(reference, same)
    output, summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), f"cache={cache}")
    mask = cache_stats(summary)["branches"]["transformer/cfg0"]["masks"][0]
    assert mask[0] == "1" and "0" in mask
    assert summary["blocks_computed"] == mask.count("1") * 12  # a skipped step runs no block
    assert psnr(reference, output) > 33.0
    forecast, forecast_summary = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), f"cache={cache}", "calibrator=taylorseer")
    assert forecast_summary["blocks_computed"] == summary["blocks_computed"]
    assert psnr(reference, forecast) > psnr(reference, output)


def test_magcache_curve_is_resampled_to_any_step_count():
    from dit_engine.caches.magcache import resample_ratios

    curve = [1.0, 1.2, 0.9, 0.95, 0.97]
    assert resample_ratios(curve, 5) == curve
    longer = resample_ratios(curve, 9)
    assert len(longer) == 9 and longer[0] == 1.0
    # the cumulative magnitude change over the trajectory is preserved
    assert math.prod(longer) == pytest.approx(math.prod(curve), rel=0.05)


def test_missing_calibration_is_a_plan_error_that_says_how_to_get_one(tmp_path):
    with pytest.raises(PlanError) as info:
        prepare(compose_config(["model=wan", "cache=magcache", "dry_run=true"]))
    assert "no published magcache mag ratios; run `python -m dit_engine cache=fit_signals`" in str(info.value)
    with pytest.raises(PlanError, match="no published teacache coefficients; run `python -m dit_engine cache=fit_signals`"):
        prepare(compose_config(["model=wan", "cache=teacache", "dry_run=true"]))
    with pytest.raises(PlanError, match="cache.signals_file=/no/such.json does not exist"):
        prepare(compose_config(["cache=teacache", "cache.signals_file=/no/such.json"]))
    bad = tmp_path / "calibration.json"
    bad.write_text('{"transformers": {"transformer": {"magcache": {"mag_ratios": [1.0, 1.1]}}}}')
    with pytest.raises(PlanError, match="has no teacache section"):
        prepare(compose_config(["cache=teacache", f"cache.signals_file={bad}"]))


CACHE_OPTIONS = [o for o in group_options("cache", include_plugins=False) if o not in ("none", "fit_signals", "calibration_run", "plan_steps")]


@pytest.mark.parametrize("option", with_peer_marks(CACHE_OPTIONS))
def test_every_cache_option_runs_on_the_tiny_model_and_tiny_flux(tiny_pipe, tiny_flux, option):
    for pipe, run, steps in ((tiny_pipe, lambda: run_tiny(tiny_pipe, prompts=["five"]), 28),
                             (tiny_flux, lambda: tiny_flux(**tiny_flux_call_kwargs()).images, 8)):
        reference = run()
        # diffusers' MagCache needs the step count up front (the CLI fills in the workload's)
        extra = [f"cache.num_inference_steps={steps}"] if option == "diffusers_magcache" else []
        output, summary = apply_and_run(pipe, run, f"cache={option}", *extra)
        assert output.shape == reference.shape and torch.isfinite(output).all(), option
        assert 0 < summary["blocks_computed"] <= summary["blocks_total"], option
        assert torch.equal(run(), reference), f"{option}: remove() must restore the plain pipeline"


def fit_signals(pipe, run, tmp_path) -> str:
    """A calibration.json for ``pipe`` from one run under cache=fit_signals."""
    handle = dit_engine.apply(pipe, "cache=fit_signals")
    try:
        run()
        data = handle.transforms[-1].artifacts()["calibration.json"]
    finally:
        handle.remove()
    file = tmp_path / "calibration.json"
    file.write_text(json.dumps(data))
    return str(file)


@pytest.mark.parametrize("cache", ["teacache", "magcache"])
def test_whole_step_caches_from_a_signal_fit_on_wan_and_qwen(tiny_wan, tmp_path, cache):
    qwen = build_tiny_qwen_image_pipeline(seed=0)
    qwen.set_progress_bar_config(disable=True)
    for pipe, run in ((tiny_wan, lambda: tiny_wan(**tiny_wan_call_kwargs()).frames),
                      (qwen, lambda: qwen(**tiny_qwen_image_call_kwargs()).images)):
        file = fit_signals(pipe, run, tmp_path)
        entry = json.loads(open(file).read())["transformers"]["transformer"]
        assert len(entry["magcache"]["mag_ratios"]) == 8 and len(entry["teacache"]["coefficients"]) == 5
        _, summary = apply_and_run(pipe, run, f"cache={cache}", f"cache.signals_file={file}", "cache.threshold=0.5")
        stats = cache_stats(summary)
        assert set(stats["branches"]) == {"transformer/cfg0", "transformer/cfg1"}  # separate cond / uncond calls
        assert summary["blocks_computed"] < summary["blocks_total"]


def test_abcache_extrapolation_is_exact_for_polynomials_of_its_order():
    from dit_engine.calibrators.abcache import PolynomialExtrapolationForecaster

    forecaster = PolynomialExtrapolationForecaster(order=2, warmup=3)
    history = None
    for step in (0, 2, 5):  # uneven spacing
        history = forecaster.update(history, torch.tensor([3.0 * step * step - step + 1]), step)
    assert forecaster.forecast(history, 8).item() == pytest.approx(3 * 64 - 8 + 1)
    # order 1 is linear extrapolation from the last two computes, the same as TaylorSeer order 1
    linear = PolynomialExtrapolationForecaster(order=1, warmup=2)
    h = linear.update(linear.update(None, torch.tensor([1.0]), 0), torch.tensor([7.0]), 3)
    assert linear.forecast(h, 5).item() == pytest.approx(11.0)


def test_abcache_calibrator_raises_psnr(tiny_pipe):
    reference = run_tiny(tiny_pipe)
    plain, _ = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static")
    forecast, _ = apply_and_run(tiny_pipe, lambda: run_tiny(tiny_pipe), "cache=scm_static", "calibrator=abcache")
    assert psnr(reference, forecast) > psnr(reference, plain) + 2.0


def test_wan22_two_experts_keep_their_own_state(tiny_wan):
    import copy

    from diffusers import WanPipeline

    parts = {k: v for k, v in tiny_wan.components.items() if k in ("tokenizer", "text_encoder", "vae", "scheduler", "transformer")}
    pipe = WanPipeline(**parts, transformer_2=copy.deepcopy(tiny_wan.transformer), boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    run = lambda: torch.as_tensor(pipe(**tiny_wan_call_kwargs()).frames)  # noqa: E731
    reference = run()
    _, summary = apply_and_run(pipe, run, "cache=dbcache", "cache.threshold=0.5")
    calls = summary["transformer_calls"]
    assert set(calls) == {"transformer", "transformer_2"} and sum(calls.values()) == 16  # 8 steps x cond/uncond
    branches = cache_stats(summary)["branches"]
    assert set(branches) == {"transformer/cfg0", "transformer/cfg1", "transformer_2/cfg0", "transformer_2/cfg1"}
    assert torch.equal(run(), reference)
