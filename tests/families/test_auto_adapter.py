"""The automatic adapter: block lists and call patterns inferred from one traced call.

With each family's own adapter switched off (``blocked=[<family>]``), FLUX, Wan, SD3, CogVideoX
and HunyuanVideo run through the automatic adapter alone and give the same outputs, under a block
cache and under step forecasting, as through their hand-written adapters. Pipelines it cannot
serve are refused with one line naming the pipeline and transformer classes and what it could not
infer.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

import dit_engine
from dit_engine import UnsupportedPipelineError
from dit_engine.testing.conformance import run
from dit_engine.testing.zoo import build_case

#: (zoo variant, its hand-written adapter)
FAMILIES = [("flux", "flux"), ("wan", "wan"), ("sd3", "sd3"), ("cogvideox", "cogvideox"), ("hunyuan_video", "hunyuan_video")]
PLANS = [
    ("cache=dbcache", "cache.threshold=0.5", "cache.warmup_steps=1"),
    ("cache=scm_static", "calibrator=taylorseer"),
]


def _run_with(case, overrides, example_call=None):
    handle = dit_engine.apply(case.pipe, *overrides, example_call=example_call)
    try:
        return run(case.pipe, case.call()), handle
    finally:
        handle.remove()


@pytest.mark.parametrize("variant,family", FAMILIES)
def test_auto_matches_the_hand_written_adapter(variant, family):
    case = build_case(variant)
    for overrides in PLANS:
        expected, by_hand = _run_with(case, overrides)
        output, auto = _run_with(case, (*overrides, f"blocked=[{family}]"), example_call=case.call())
        assert by_hand.plan.adapter.name == family and auto.plan.adapter.name == "auto"
        assert [(s.path, s.pattern.returns) for s in auto.plan.adapter.block_specs] == \
               [(s.path, s.pattern.returns) for s in by_hand.plan.adapter.block_specs]
        assert torch.equal(output, expected), f"{variant} under {overrides}: auto differs from adapter '{family}'"
        assert auto.summary()["blocks_computed"] == by_hand.summary()["blocks_computed"]
    explained = auto.plan.explain()
    assert "adapter 'auto'" in explained and "inferred for transformer" in explained


def test_the_trace_leaves_no_hook_behind_and_the_output_unchanged():
    case = build_case("sd3")
    plain = run(case.pipe, case.call())
    handle = dit_engine.apply(case.pipe, "blocked=[sd3]", "cache=dbcache", "cache.threshold=0", example_call=case.call())
    try:
        assert torch.equal(run(case.pipe, case.call()), plain)
    finally:
        handle.remove()
    transformer = case.pipe.transformer
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in transformer.modules())


class _OpaqueTransformer(ModelMixin, ConfigMixin):
    """A transformer with no list of attention blocks: nothing for the automatic adapter to find."""

    @register_to_config
    def __init__(self, width: int = 4):
        super().__init__()
        self.proj = torch.nn.Linear(width, width)

    def forward(self, x):
        return self.proj(x)


class OpaquePipeline(DiffusionPipeline):
    def __init__(self, transformer):
        super().__init__()
        self.register_modules(transformer=transformer)

    def __call__(self, prompt=None, num_inference_steps=2, output_type="latent", generator=None, **_):
        return (self.transformer(torch.zeros(1, 4)),)


class NoDiTPipeline(DiffusionPipeline):
    def __init__(self):
        super().__init__()


def test_a_pipeline_nothing_can_serve_is_refused_in_one_line():
    pipe = OpaquePipeline(_OpaqueTransformer())
    handle = dit_engine.apply(pipe, "cache=dbcache")  # traced on the first call, which refuses
    with pytest.raises(UnsupportedPipelineError) as err:
        pipe(prompt="a cat")
    with pytest.raises(UnsupportedPipelineError):  # and the next one too: never run without the plan
        pipe(prompt="a cat")
    handle.remove()
    assert type(pipe) is OpaquePipeline
    # the caller's pipeline, not the embedded model: its 16 px limit is no problem of apply()
    dit_engine.apply(pipe, "cache=dbcache", "workload.height=32").remove()
    message = str(err.value)
    assert "\n" not in message
    assert "OpaquePipeline (transformer: _OpaqueTransformer)" in message
    assert "has no top-level ModuleList of attention blocks" in message and "docs/plugins.md" in message
    with pytest.raises(UnsupportedPipelineError, match=r"no installed adapter serves NoDiTPipeline \(no transformer component\)"):
        dit_engine.apply(NoDiTPipeline(), "cache=dbcache")


@pytest.mark.parametrize("variant,family", [("wan", "wan"), ("cogvideox", "cogvideox")])
def test_model_auto_traces_the_first_real_call(variant, family):
    """apply(pipe, "model=auto", ...) without an example call: the pipeline's first call is traced
    (its own arguments fit it, where the workload's default prompt did not) and runs with the
    plan; it equals the hand-written adapter's output, and the trace left the user's generator
    where the plain call leaves it."""
    overrides = ("cache=dbcache", "cache.threshold=0.5", "cache.warmup_steps=1")
    case = build_case(variant)
    expected_call = case.call()
    expected, by_hand = _run_with_call(case, overrides, expected_call)  # by_hand: its summary
    pipeline_class = type(case.pipe)
    auto = dit_engine.apply(case.pipe, "model=auto", *overrides)
    assert type(case.pipe) is not pipeline_class  # the first call is intercepted
    with pytest.raises(dit_engine.AlreadyAppliedError, match="its next call completes"):
        dit_engine.apply(case.pipe, "cache=dbcache")
    with pytest.raises(dit_engine.DitEngineError, match="completed on the pipeline's first call"):
        auto.summary()
    call = case.call()
    try:
        output = run(case.pipe, call)
        assert auto.completed and auto.plan.adapter.name == "auto" and by_hand["adapter"] == family
        assert torch.equal(output, expected)
        assert auto.summary()["blocks_computed"] == by_hand["blocks_computed"] < auto.summary()["blocks_total"]
        assert torch.equal(call["generator"].get_state(), expected_call["generator"].get_state())
    finally:
        auto.remove()
    assert type(case.pipe) is pipeline_class  # the interception is gone


def _run_with_call(case, overrides, call):
    """The output of one call under ``overrides`` and the plan's summary, taken before it is removed."""
    handle = dit_engine.apply(case.pipe, *overrides)
    try:
        output = run(case.pipe, call)
        return output, {**handle.summary(), "adapter": handle.plan.adapter.name}
    finally:
        handle.remove()


def test_a_failing_trace_names_the_fix():
    case = build_case("sd3")
    with pytest.raises(UnsupportedPipelineError, match="traced call failed: .*example_call"):
        dit_engine.apply(case.pipe, "blocked=[sd3]", "cache=dbcache", example_call={"prompt": "a cat"})


def test_model_auto_runs_a_saved_pipeline_and_reports_what_it_inferred(tmp_path):
    from dit_engine.session import Session
    from dit_engine.testing import save_tiny_flux_pipeline

    folder = save_tiny_flux_pipeline(tmp_path / "tiny-flux")
    overrides = ["model=auto", f"model.pretrained={folder}", "model.dtype=float32", "model.device=cpu", "cache=scm",
                 "cache.mask=10", "cache.policy=static", "workload.height=32", "workload.width=32", "workload.num_inference_steps=6",
                 "workload.prompts=[a cat]", "+workload.call_kwargs.max_sequence_length=16", "workload.warmup=0",
                 "workload.repeats=1", "report.quality=false", "report.contact_sheet=false"]
    dry = Session.from_overrides([*overrides, "dry_run=true"]).prepare()
    assert dry.plan.model_info.blocks == {"transformer_blocks": 2, "single_transformer_blocks": 4}
    assert "inferred at load by one traced call" in dry.plan.explain()
    metrics = Session.from_overrides(overrides).run(tmp_path / "run")
    assert metrics["model"]["adapter"] == "auto"
    lists = metrics["model"]["inferred"]["transformer"]["lists"]
    assert [(i["path"], i["returns"]) for i in lists] == [("transformer_blocks", ["encoder", "hidden"]),
                                                          ("single_transformer_blocks", ["encoder", "hidden"])]
    assert metrics["compute"]["steps_cached"] > 0
    plan = (tmp_path / "run" / "plan.txt").read_text()
    assert "adapter 'auto'" in plan and "transformer_blocks[2] dual(encoder,hidden)" in plan
