"""quant=: every scheme this CPU runs, on tiny FLUX and the embedded model, alone and under the
caches; its cost in PSNR against the unquantized output; targets, exclusions and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

import dit_engine
from dit_engine.errors import DitEngineError, IrreversiblePlanError, PlanError
from dit_engine.testing import conformance
from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs

CPU_SCHEMES = ["int8_weight_only", "int8_dynamic", "fp8_weight_only", "intx_weight_only"]
#: PSNR floors against the unquantized output on tiny FLUX (measured: int8 ~82 dB, fp8 ~68 dB, int4 ~59 dB)
FLOOR_DB = {"int8_weight_only": 70, "int8_dynamic": 70, "fp8_weight_only": 55, "intx_weight_only": 45}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def block_linears(pipe) -> list[str]:
    return [name for name, m in pipe.transformer.named_modules()
            if isinstance(m, torch.nn.Linear) and name.split(".")[0] in ("transformer_blocks", "single_transformer_blocks")
            and "norm" not in name]


def fresh_flux():
    pipe = build_tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def unquantized():
    return conformance.run(fresh_flux(), tiny_flux_call_kwargs())


@pytest.mark.parametrize("cache", [[], ["cache=dbcache", "cache.threshold=0.3"], ["cache=scm_static", "calibrator=taylorseer"]],
                         ids=["alone", "dbcache", "step_forecast"])
@pytest.mark.parametrize("scheme", CPU_SCHEMES)
def test_each_cpu_scheme_runs_and_composes_with_the_caches(unquantized, scheme, cache):
    pipe = fresh_flux()
    handle = dit_engine.apply(pipe, f"quant={scheme}", *cache)
    output = conformance.run(pipe, tiny_flux_call_kwargs())
    stats = handle.summary()["transforms"]["quantize.torchao"]
    assert stats["layers"] == len(block_linears(pipe))  # every block linear layer outside the norms, nothing else
    assert stats["weight_bytes_after"] < 0.5 * stats["weight_bytes_before"]
    if not cache:  # the caches' own cost comes on top; alone, the scheme's cost is bounded
        assert psnr(output, unquantized) > FLOOR_DB[scheme]
    assert output.shape == unquantized.shape and torch.isfinite(output).all()
    if cache:
        assert handle.summary()["steps_cached"] > 0 or handle.summary()["compute_fraction"] < 1


def test_quantization_cannot_be_removed_and_says_to_reload():
    pipe = fresh_flux()
    handle = dit_engine.apply(pipe, "quant=int8_weight_only")
    with pytest.raises(IrreversiblePlanError, match="quantize.torchao changed the pipeline irreversibly; load the pipeline again"):
        handle.remove()


def test_targets_and_exclusions_choose_the_layers():
    pipe = fresh_flux()
    handle = dit_engine.apply(pipe, "quant=int8_weight_only", "quant.targets=[single_transformer_blocks.*]",
                              "quant.exclude=[*.proj_out]")
    # an explicit quant.exclude replaces the default one (*norm*): the norms' linear layers count too
    single = [n for n, m in pipe.transformer.named_modules() if isinstance(m, torch.nn.Linear)
              and n.startswith("single_transformer_blocks") and not n.endswith("proj_out")]
    assert handle.summary()["transforms"]["quantize.torchao"]["layers"] == len(single) > 0
    assert type(pipe.transformer.transformer_blocks[0].attn.to_q.weight).__name__ == "Parameter"
    assert type(pipe.transformer.single_transformer_blocks[0].attn.to_q.weight).__name__ != "Parameter"
    assert type(pipe.transformer.single_transformer_blocks[0].proj_out.weight).__name__ == "Parameter"


def test_targets_that_match_nothing_are_one_line():
    with pytest.raises(DitEngineError, match="match no linear layer of transformer; its layers are named like"):
        dit_engine.apply(fresh_flux(), "quant=int8_weight_only", "quant.targets=[no_such_module.*]")


@pytest.mark.parametrize("overrides,expected", [
    (["quant=fp8_dynamic"], "needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper); on this cpu device use one of"),
    (["quant=int4_weight_only"], "needs a CUDA GPU and the mslk package"),
    (["quant=intx_weight_only", "quant.bits=9"], "quant.bits=9: intx_weight_only takes 1 to 8 bits"),
    (["quant=int8_weight_only", "parallel=tp2"], "quant= with tensor parallelism is not supported"),
])
def test_bad_quant_settings_are_refused_at_plan_time(overrides, expected):
    with pytest.raises(PlanError, match=None) as info:
        dit_engine.apply(fresh_flux(), *overrides)
    assert expected in str(info.value)


def test_a_quantized_run_records_its_psnr_against_the_unquantized_reference(tmp_path):
    from dit_engine.session import Session

    run = tmp_path / "run"
    Session.from_overrides(["quant=int8_weight_only", "cache=dbcache", "workload=smoke", "report=quality",
                            f"report.reference_dir={tmp_path / 'refs'}", "quiet=true"]).run(run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 25 < metrics["quality"]["aggregate"]["psnr"] < math.inf
    assert metrics["compute"]["transforms"]["quantize.torchao"]["layers"] > 0
