"""Hardening: values no run can produce are refused before anything loads (one line, exit 2), and
a run whose images turn NaN or infinite fails (one line naming the cause, exit 1, nothing written
as a result) instead of saving flat black images as a success.

The CLI cases run ``dit_engine.cli.main`` in this process, as ``tests/test_bad_inputs.py`` does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dit_engine import run_loop
from dit_engine.errors import NonFiniteOutputError
from dit_engine.testing.cli import refusal, run_cli


def _tiny_lora(path: Path, scale: float = 0.5, poison: float | None = None) -> Path:
    """Rank-2 LoRA weights for the tiny transformer's attention projections; ``poison`` replaces
    one value of the first matrix (NaN, Inf, or a huge finite number)."""
    from dit_engine.digits import load_digits_pipeline

    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, module in load_digits_pipeline().transformer.named_modules():
        if name.endswith(("attn.to_q", "attn.to_v")):
            weights[f"transformer.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=generator) * scale
            weights[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=generator) * scale
    if poison is not None:
        first = next(iter(weights))
        weights[first][0, 0] = poison
    save_file(weights, str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening_inputs")
    os.symlink(root / "no_such_target", root / "dangling")
    _tiny_lora(root / "nan_lora.safetensors", poison=float("nan"))
    _tiny_lora(root / "inf_lora.safetensors", poison=float("inf"))
    _tiny_lora(root / "good_lora.safetensors")
    return root


LONG_NAME = "a" * 300

#: (command line, a piece of the one-line error); ``{root}`` is the world fixture's directory.
CASES = [
    (["workload.seed=36893488147419103232"], "seeds are integers from 0 to 2^64-1"),
    (["workload.seed=-1"], "seeds are integers from 0 to 2^64-1"),
    (["workload.seed=18446744073709551615", "workload.num_prompts=2"], "image i uses seed + i"),
    (["model=flux", "dry_run=true", "workload.height=1048576", "workload.width=1048576"], "sizes run from 1 to 16384 pixels"),
    (["workload.prompts=[[one,two]]"], "workload.prompts holds ['one', 'two'], not a string"),
    (["+workload.call_kwargs.num_inference_steps=3"], "workload.call_kwargs.num_inference_steps would override workload.num_inference_steps"),
    (["+workload.call_kwargs.output_type=latent"], "workload.call_kwargs.output_type would override the engine"),
    (["workload.guidance_scale=1e308"], "is far beyond any trained guidance"),
    (["workload.guidance_scale=-5000"], "is far beyond any trained guidance"),
    (["model=flux", "dry_run=true", "+workload.call_kwargs.true_cfg_scale=1e9"], "workload.call_kwargs.true_cfg_scale=1e+09 is far beyond"),
    (["workload.num_inference_steps=1000000000"], "workload.num_inference_steps=1000000000: at most 10000"),
    (["compile=regional", "compile.backend=tvm"], "compile.backend=tvm needs the tvm package"),
    (["compile=regional", "compile.backend=relu_compile_error_TESTING_ONLY"], "is not a torch.compile backend"),
    (["hydra.run.dir={root}/dangling"], "is a symbolic link to"),
    (["-m", "cache=none,dbcache", "hydra.sweep.dir={root}/dangling"], "is a symbolic link to"),
    ([f"hydra.run.dir={{root}}/{LONG_NAME}/run"], "has 300 bytes, the file system takes at most"),
    (["-m", "cache=none,dbcache", f"hydra.sweep.dir={{root}}/{LONG_NAME}"], "has 300 bytes"),
    (["lora={root}/nan_lora.safetensors", "workload=smoke"], "holds NaN or infinite weights"),
    (["lora={root}/inf_lora.safetensors", "workload=smoke"], "holds NaN or infinite weights"),
    (["lora={root}/good_lora.safetensors", "lora.scale=1000"], "lora.scale=1000.0 must be from 0 to 100"),
    (["lora={root}/good_lora.safetensors", "lora.scale=inf"], "lora.scale=inf is not a finite number"),
]
if not torch.cuda.is_available():
    CASES.append((["compile=regional", "compile.backend=cudagraphs"], "is not a CUDA device"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(a)[:80] for a, _ in CASES])
def test_impossible_values_are_one_line_exit_2_before_anything_runs(world, monkeypatch, args, expected):
    if any(a.startswith("lora=") for a in args):
        pytest.importorskip("peft")
    monkeypatch.chdir(world)
    args = [a.replace("{root}", str(world)) for a in args]
    before = _files(world)
    line = refusal(*args)
    assert expected in line, line
    assert _files(world) == before, "a refused run left files behind"


def test_a_run_whose_images_turn_nan_fails_in_one_line_and_writes_no_result(tmp_path, monkeypatch):
    """A LoRA of finite but huge weights (1e30) overflows inside the transformer: every check up
    front passes, the images would be black; the run fails with exit 1 and the LoRA named."""
    pytest.importorskip("peft")
    monkeypatch.chdir(tmp_path)
    lora = _tiny_lora(tmp_path / "huge.safetensors", scale=1e30)
    run_dir = tmp_path / "run"
    code, stderr = run_cli(f"lora={lora}", "workload=smoke", f"hydra.run.dir={run_dir}")
    lines = [line for line in stderr.splitlines() if line.strip() and "%|" not in line]
    assert code == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("dit_engine: error: the images are NaN/Inf"), stderr
    assert "LoRA" in lines[0] and "Traceback" not in stderr
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "images").exists()


def _tiny(overrides=()):
    from dit_engine.session import Session

    session = Session.from_overrides(["workload=smoke", "quiet=true", *overrides]).prepare()
    pipe = session.load()
    return session, pipe


def _call(session, pipe):
    w = session.workload
    return run_loop.call_pipeline(pipe, session.adapter, w, w.prompts[:1], [w.seed])


def test_non_finite_values_are_found_where_they_start():
    session, pipe = _tiny()
    transformer = pipe.transformer
    assert len(_call(session, pipe)) == 1  # finite: images as before

    calls = {"n": 0}

    def inf_from_third_call(module, args, output):
        calls["n"] += 1
        if calls["n"] >= 3:
            return (output[0] * float("inf"), *output[1:])
        return output

    handle = transformer.register_forward_hook(inf_from_third_call)
    with pytest.raises(NonFiniteOutputError, match=r"latents turned non-finite after 2 transformer call\(s\); the likely cause is guidance_scale="):
        _call(session, pipe)
    handle.remove()

    with torch.no_grad():
        weight = next(p for p in transformer.parameters() if p.dim() == 2)
        saved = weight.clone()
        weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteOutputError, match="very first output was not finite"):
        _call(session, pipe)
    with torch.no_grad():
        weight.copy_(saved)

    decode = type(pipe.vae).decode
    try:
        type(pipe.vae).decode = lambda self, latents, *a, **k: decode(self, latents, *a, **k) * float("nan")
        with pytest.raises(NonFiniteOutputError, match="final latents or the decoded images are not finite"):
            _call(session, pipe)
    finally:
        type(pipe.vae).decode = decode
    # the watch leaves nothing behind: no hook, no wrapper, the same images as the first call
    assert not transformer._forward_hooks and "decode" not in vars(pipe.vae)
    assert len(_call(session, pipe)) == 1


def test_the_api_refuses_impossible_workloads_before_tracing(tiny_pipe):
    import dit_engine
    from dit_engine.errors import PlanError

    with pytest.raises(PlanError, match="seeds are integers from 0 to 2\\^64-1"):
        dit_engine.apply(tiny_pipe, "workload.seed=-3")
    assert getattr(tiny_pipe, "_dit_engine_handle", None) is None
