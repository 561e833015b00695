"""Bad input, from the CLI and the Python API: one line that names the fix, exit code 2 (a
dit_engine error type from the API), no traceback, and nothing under the outputs tree changed.

The CLI cases run ``dit_engine.cli.main`` in this process (the same code path as
``python -m dit_engine``, without paying Python's start-up 60 times); ``test_cli.py`` covers the
real subprocess.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

import dit_engine
from dit_engine.testing.cli import refusal
from dit_engine.errors import DitEngineError


def tree_hash(root: Path) -> str:
    """Every path and file content under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A working directory with an earlier run and sweep, and damaged inputs to point at."""
    root = tmp_path_factory.mktemp("bad_inputs")
    from dit_engine.session import Session

    Session.from_overrides(["workload=smoke", "quiet=true"]).run(root / "outputs" / "earlier_run")
    (root / "outputs" / "earlier_sweep" / "0_cache=none").mkdir(parents=True)
    (root / "outputs" / "earlier_sweep" / "0_cache=none" / "metrics.json").write_text("{}")
    (root / "a_file").write_text("not a directory")
    for name, config in {"corrupt": "{not json", "no_keys": json.dumps({"num_layers": 2}), "a_list": "[1, 2]"}.items():
        folder = root / "models" / name
        (folder / "transformer").mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
        (folder / "transformer" / "config.json").write_text(config)
    (root / "models" / "no_index").mkdir(parents=True)
    index = {"_class_name": "FluxPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "transformer": ["diffusers", "FluxTransformer2DModel"]}
    for name, folders in {"missing_component": ["transformer"], "empty_components": ["transformer", "scheduler"]}.items():
        folder = root / "models" / name
        for sub in folders:
            (folder / sub).mkdir(parents=True)
        (folder / "model_index.json").write_text(json.dumps(index))
        (folder / "transformer" / "config.json").write_text(json.dumps({"num_layers": 1, "num_single_layers": 1, "num_attention_heads": 2}))
    (root / "models" / "bad_index").mkdir()
    (root / "models" / "bad_index" / "model_index.json").write_text("{oops")
    calibrations = {
        "invalid.json": "{oops",
        "list.json": "[1, 2, 3]",
        "no_coefficients.json": json.dumps({"transformers": {"transformer": {"teacache": {"points": 3}}}}),
        "text_coefficients.json": json.dumps({"transformers": {"transformer": {"teacache": {"coefficients": "abc"}}}}),
        "empty_coefficients.json": json.dumps({"transformers": {"transformer": {"teacache": {"coefficients": []}}}}),
        "nan_coefficients.json": '{"transformers": {"transformer": {"teacache": {"coefficients": [1.0, NaN]}}}}',
        "other_model.json": json.dumps({"model": "flux", "transformers": {"transformer": {"teacache": {"coefficients": [1.0, 0.0]}}}}),
        "negative_ratios.json": json.dumps({"transformers": {"transformer": {"magcache": {"mag_ratios": [1.0, -0.5]}}}}),
        "empty_ratios.json": json.dumps({"transformers": {"transformer": {"magcache": {"mag_ratios": []}}}}),
        "transformers_list.json": json.dumps({"transformers": [1, 2]}),
    }
    for name, text in calibrations.items():
        (root / "calibrations" / name).parent.mkdir(exist_ok=True)
        (root / "calibrations" / name).write_text(text)
    (root / "clip_no_weights").mkdir()
    (root / "clip_no_weights" / "config.json").write_text("{}")
    return root


#: (command line, a piece of the one-line error); ``{root}`` is the world fixture's directory.
CLI_CASES = [
    (["cache=dbcachee"], "unknown option cache=dbcachee; available cache options:"),
    (["model=sd9"], "unknown option model=sd9"),
    (["calibrator=taylorsear"], "unknown option calibrator=taylorsear"),
    (["workload=huge"], "unknown option workload=huge"),
    (["+cache.foo=1"], "unknown key cache.foo; valid keys:"),
    (["cache=dbcache", "+cache.bar=2"], "unknown key cache.bar"),
    (["+foo=1"], "unknown key foo; top-level keys:"),
    (["+model.x=1"], "unknown key model.x; valid keys: adapter"),
    (["+workload.steps=3"], "unknown key workload.steps"),
    (["cache.foo=1"], "unknown key cache.foo"),
    (["cache=dbcache", "cache.threshold=abc"], "is not a valid float"),
    (["cache=dbcache", "cache.front_blocks=x"], "is not a valid int"),
    (["cache=dbcache", "cache.separate_cfg=maybe"], "is not a valid bool"),
    (["quiet=perhaps"], "is not a valid bool"),
    (["cache=dbcache", "cache.threshold=-1"], "cache.threshold=-1.0 must be >= 0"),
    (["cache=dbcache", "cache.threshold=nan"], "cache.threshold=nan is not a finite number"),
    (["cache=dbcache", "cache.threshold=inf"], "cache.threshold=inf is not a finite number"),
    (["workload.guidance_scale=nan"], "workload.guidance_scale=nan is not a finite number"),
    (["workload.guidance_scale=-inf"], "workload.guidance_scale=-inf is not a finite number"),
    (["report.psnr_floor=nan"], "report.psnr_floor=nan is not a finite number"),
    (["workload.num_inference_steps=0"], "workload.num_inference_steps=0; use 1 or more"),
    (["workload.repeats=0"], "workload.repeats=0; use 1 or more"),
    (["workload.warmup=-1"], "workload.warmup=-1; use 0 or more"),
    (["workload.batch_size=-2"], "workload.batch_size=-2"),
    (["workload.prompts=[cat]"], "unknown prompt 'cat' for the tiny model"),
    (["workload.prompts=[]"], "workload.prompts is empty"),
    (["workload.num_prompts=0"], "workload.prompts is empty"),
    (["workload.height=32"], "the tiny model generates 16x16 images only"),
    (["workload.width=8"], "the tiny model generates 16x16 images only"),
    (["model=flux", "workload.height=17", "dry_run=true"], "multiples of 16"),
    (["model=wan", "workload.width=8", "dry_run=true"], "multiples of 16"),
    (["model=flux", "model.pretrained={root}/models/corrupt"], "is not valid JSON"),
    (["model=flux", "model.pretrained={root}/models/no_keys"], "lacks num_single_layers"),
    (["model=flux", "model.pretrained={root}/models/a_list"], "is not a model config"),
    (["model=flux", "model.pretrained={root}/models/no_index"], "has no model_index.json"),
    (["model=flux", "model.pretrained=/no/such/dir"], "does not exist"),
    (["model=flux", "model.pretrained={root}/models/missing_component"], "lacks the component folder(s) scheduler"),
    (["model=flux", "model.pretrained={root}/models/bad_index"], "model_index.json is not valid JSON"),
    # passes every check, fails when diffusers loads it: still one line, and the new run dir is removed
    (["model=flux", "model.pretrained={root}/models/empty_components", "workload=smoke"], "could not load model=flux"),
    (["model=flux", "model.pretrained={root}/a_file"], "has no model_index.json"),
    (["model=flux", "model.pretrained=null"], "model=flux needs weights: set model.pretrained"),
    (["model=flux", "model.pretrained=black-forest-labs/FLUX.1-dev"], "is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"),
    (["model.pretrained={root}/a_file"], "tiny_dit.json"),
    (["model.dtype=float8"], "model.dtype=float8 is not supported"),
    (["model.device=gpu"], "model.device=gpu is not a device"),
    (["model.device=cuda:7"], "no CUDA device is available") if not torch.cuda.is_available() else (["model.device=gpu"], "is not a device"),
    (["cache=teacache", "cache.calibration_file=/no/such.json"], "does not exist"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/invalid.json"], "is not a dit_engine calibration.json"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/list.json"], "no 'transformers' mapping"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/transformers_list.json"], "no 'transformers' mapping"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/no_coefficients.json"], "teacache.coefficients must be a non-empty list"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/text_coefficients.json"], "must be a non-empty list of numbers"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/empty_coefficients.json"], "must be a non-empty list"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/nan_coefficients.json"], "not a finite number"),
    (["cache=teacache", "cache.calibration_file={root}/calibrations/other_model.json"], "was made for model=flux, this run is model=tiny"),
    (["cache=magcache", "cache.calibration_file={root}/calibrations/negative_ratios.json"], "a ratio that is not positive"),
    (["cache=magcache", "cache.calibration_file={root}/calibrations/empty_ratios.json"], "must be a non-empty list"),
    (["cache=magcache", "cache.calibration_file={root}/calibrations/invalid.json"], "has no magcache section|is not a dit_engine calibration.json"),
    (["cache=teacache", "cache.coefficients=[]"], "cache.coefficients must be a non-empty list"),
    (["cache=magcache", "cache.mag_ratios=[1.0,0]"], "a ratio that is not positive"),
    (["cache=magcache", "cache.retention_ratio=1.5"], "cache.retention_ratio=1.5"),
    (["report.clip_model=/no/such/clip"], "is not a local CLIP model directory"),
    (["report.clip_model={root}/clip_no_weights"], "has no weights"),
    (["report=quality", "report.reference_dir={root}/a_file"], "report.reference_dir={root}/a_file is a file"),
    (["report=quality", "report.reference_dir={root}/a_file/refs"], "cannot be written"),
    (["report.objective=fast"], "report.objective=fast is unknown"),
    (["report.objective=psnr"], "needs the reference run"),
    (["report.reference_timing=sometimes"], "report.reference_timing=sometimes is unknown"),
    (["hydra.run.dir={root}/a_file"], "hydra.run.dir={root}/a_file is a file"),
    (["hydra.run.dir={root}/outputs/earlier_run"], "already holds files (an earlier run?)"),
    (["hydra.run.dir={root}/a_file/run"], "cannot be created"),
    (["-m", "cache=none,dbcache", "hydra.sweep.dir={root}/outputs/earlier_sweep"], "already holds files (an earlier sweep?)"),
    (["-m", "cache=none,dbcache", "cache.threshold=0.1,-1"], "sweep cell [cache=dbcache cache.threshold=-1]"),
    (["-m", "cache=none,dbcachee"], "unknown option cache=dbcachee"),
    (["calibrator=taylorseer"], "calibrator=taylorseer needs a cache to calibrate"),
    (["cache=dbprune", "calibrator=taylorseer"], "cannot bind to cache.dbprune"),
    (["cache=fit_signals", "calibrator=abcache"], "cannot bind to cache.fit_signals"),
    (["cache=dbcache", "calibrator=taylorseer", "calibrator.order=9"], "calibrator.order=9: use 1, 2 or 3"),
    (["cache=scm", "cache.preset=turbo"], "cache.preset=turbo is unknown"),
    (["cache=scm", "cache.mask=12x"], "has characters other than 0 and 1"),
    (["cache=scm", "cache.policy=sometimes"], "cache.policy=sometimes is unknown"),
    (["cache=dbcache", "cache.front_blocks=6", "cache.back_blocks=6"], "leaves no middle block"),
    (["cache=dbcache", "cache.warmup_steps=-3"], "cache.warmup_steps=-3 is negative"),
    (["cache=dbcache", "cache.max_cached_steps=-5"], "cache.max_cached_steps=-5"),
    (["cache=dbcache", "blocked=[cache.dbcache]"], "is blocked by the config key 'blocked'"),
    (["model=tiny", "blocked=[tiny]"], "adapter 'tiny' is blocked"),
    (["cache=diffusers_magcache", "cache.num_inference_steps=50"], "but the workload runs 28 steps"),
    (["cache=diffusers_taylorseer", "cache.max_order=7"], "cache.max_order=7"),
    (["workload.call_kwargs={max_sequence_length:64}"], "add it with +workload.call_kwargs="),
    (["+workload.call_kwargs.foo=1"], "workload.call_kwargs.foo: TinyDiTPipeline.__call__ takes no such argument"),
    (["workload.prompts=zero"], "workload.prompts takes a list: write workload.prompts=[a,b]"),
    (["report=quality", "report.reference_dir="], "report.reference_dir is empty"),
    (["parallel=cfg2"], "parallel.cfg_degree=2 needs two CFG branches"),
    (["parallel=ulysses2", "parallel.ulysses_degree=3", "parallel.any_shape=false"], "does not divide the model's 4 attention heads"),
    (["parallel=ulysses2", "parallel.ulysses_degree=0"], "parallel.ulysses_degree=0 must be a whole number >= 1"),
    (["parallel=ulysses2", "cache=diffusers_fbc"], "decides on each rank's own shard"),
    (["parallel=ring2", "cache=fit_signals"], "decides on each rank's own shard"),
    (["parallel=cfg2", "workload.guidance_scale=3", "cache=dbcache", "cache.separate_cfg=false"], "drop cache.separate_cfg=false"),
    (["parallel=ulysses2", "parallel.backend=mpi"], "use gloo, nccl or null"),
    (["parallel=ulysses2", "parallel.timeout_s=0"], "parallel.timeout_s=0.0 must be > 0"),
    (["parallel=ulysses2", "parallel.cfg_degree=3"], "CFG has two branches"),
    (["quant=int8_weight_only", "quant.scheme=int3"], "quant.scheme=int3 is unknown; use one of"),
    (["quant=fp8_dynamic"], "quant.scheme=fp8_dynamic needs a CUDA GPU of compute capability 8.9"),
    (["quant=int8_weight_only", "quant.targets=[nothing.*]"], "match no linear layer of transformer"),
    (["compile=regional", "compile.mode=fastest"], "compile.mode=fastest is unknown; use one of default"),
    (["attention=flash"], "attention.backend=flash is not available here"),
    (["attention=native", "attention.backend=_native_cudnn"], "needs a CUDA GPU; on the CPU use one of native"),
    (["offload=model"], "this run has no GPU"),
    (["offload=group", "parallel=ulysses2"], "offload= with parallel=: every rank must hold its weights"),
]


@pytest.mark.parametrize("args,expected", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2_and_touches_nothing(world, monkeypatch, args, expected):
    monkeypatch.chdir(world)
    args = [a.replace("{root}", str(world)) for a in args]
    before = tree_hash(world)
    line = refusal(*args)
    assert any(part.replace("{root}", str(world)) in line for part in expected.split("|")), line
    assert tree_hash(world) == before, "a refused run changed the outputs tree"


def test_there_are_at_least_60_bad_input_cases():
    assert len(CLI_CASES) + len(API_CASES) >= 60


#: (overrides or a non-string argument, error type name, a piece of the message)
API_CASES = [
    ((5,), "ConfigError", "apply() takes override strings like 'cache=dbcache', got int 5"),
    ((["cache=dbcache"],), "ConfigError", "unpack a list with apply(pipe, *overrides)"),
    ((None,), "ConfigError", "got NoneType None"),
    (("cache=nope",), "ConfigError", "unknown option cache=nope"),
    (("+cache.foo=1",), "PlanError", "unknown key cache.foo"),
    (("cache=dbcache", "cache.threshold=nan"), "PlanError", "is not a finite number"),
    (("cache=dbcache", "cache.threshold=abc"), "ConfigError", "is not a valid float"),
    (("model=flux",), "UnsupportedPipelineError", "adapter 'flux' does not serve TinyDiTPipeline"),
    (("calibrator=taylorseer",), "PlanError", "needs a cache to calibrate"),
    (("cache=teacache", "cache.coefficients=[]"), "PlanError", "non-empty list"),
    (("cache=diffusers_magcache",), "PlanError", "needs the step count up front"),
    (("cache=dbcache", "cache.front_blocks=12"), "PlanError", "leaves no middle block"),
    (("parallel=ulysses2", "parallel.ulysses_degree=3", "parallel.any_shape=false"), "PlanError", "does not divide"),
    (("parallel=ulysses2", "cache=diffusers_fbc"), "PlanError", "decides on each rank's own shard"),
]


@pytest.mark.parametrize("overrides,error,expected", API_CASES, ids=[repr(o) for o, _, _ in API_CASES])
def test_api_bad_input_raises_a_dit_engine_error(tiny_pipe, overrides, error, expected):
    with pytest.raises(DitEngineError) as info:
        dit_engine.apply(tiny_pipe, *overrides)
    assert type(info.value).__name__ == error
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert getattr(tiny_pipe, "_dit_engine_handle", None) is None  # nothing left applied


def test_api_refuses_a_pipeline_with_diffusers_cache_enabled(tiny_pipe):
    from diffusers.hooks import FirstBlockCacheConfig

    tiny_pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    try:
        with pytest.raises(dit_engine.AlreadyAppliedError, match=r"call pipe.transformer.disable_cache\(\) first"):
            dit_engine.apply(tiny_pipe, "cache=dbcache")
    finally:
        tiny_pipe.transformer.disable_cache()


def test_api_follows_a_replaced_scheduler(tiny_pipe):
    handle = dit_engine.apply(tiny_pipe, "cache=dbcache")
    original = tiny_pipe.scheduler
    try:
        tiny_pipe.scheduler = type(original).from_config(original.config)
        tiny_pipe(prompt=["seven"], num_inference_steps=28, generator=torch.Generator().manual_seed(0), output_type="pt")
        summary = handle.summary()
    finally:
        handle.remove()
        tiny_pipe.scheduler = original
    assert summary["steps_cached"] > 0, "caching stopped after the scheduler was replaced"
    assert not {"step", "set_timesteps"} & set(vars(original))


def test_a_damaged_reference_is_set_aside_and_computed_again(tmp_path, caplog):
    from dit_engine.reference import get_or_create

    images = [__import__("PIL.Image", fromlist=["Image"]).new("RGB", (4, 4))]
    first = get_or_create(tmp_path, {"k": 1}, lambda: (images, {"latency_s": 1.0, "clock": "wall", "clock_s": 1.0}))
    (first.path / "reference.json").write_text("{broken")
    again = get_or_create(tmp_path, {"k": 1}, lambda: (images, {"latency_s": 2.0, "clock": "wall", "clock_s": 2.0}))
    assert not again.reused and again.latency_s == 2.0
    assert any(p.name.startswith(".damaged-") for p in tmp_path.iterdir())
    (again.path / "reference.json").write_text(json.dumps({"images": ["../../etc/passwd"], "latency_s": 1, "created": "x"}))
    third = get_or_create(tmp_path, {"k": 1}, lambda: (images, {"latency_s": 3.0, "clock": "wall", "clock_s": 3.0}))
    assert third.latency_s == 3.0  # a path in the image list is damage, never followed


def test_the_reference_lock_does_not_follow_a_planted_symlink(tmp_path):
    from dit_engine.reference import get_or_create, reference_key

    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    root = tmp_path / "refs"
    root.mkdir()
    (root / f".{reference_key({'k': 2})}.lock").symlink_to(target)
    with pytest.raises(OSError):
        get_or_create(root, {"k": 2}, lambda: ([], {"latency_s": 1.0, "clock": "wall", "clock_s": 1.0}))
    assert target.read_text() == "keep me"


def _default_sigint() -> None:
    # A test run started in the background inherits SIGINT ignored; a user's terminal does not.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli_process(*args: str, cwd: Path):
    import os
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "dit_engine", *args], cwd=cwd, env=env, preexec_fn=_default_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_failing_cell_and_marks_it(tmp_path):
    fake_clip = tmp_path / "fake_clip"
    fake_clip.mkdir()
    (fake_clip / "config.json").write_text("{}")
    (fake_clip / "model.safetensors").write_text("not weights")  # passes the checks, fails when loaded
    process = _cli_process("-m", f"report.clip_model={fake_clip},null", "workload=smoke", "quiet=true",
                           "hydra.sweep.dir=sweep", cwd=tmp_path)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert "sweep cell 0 failed, the sweep goes on: internal error" in stderr and "Traceback" not in stderr
    failed = list((tmp_path / "sweep").rglob("failed.json"))
    assert len(failed) == 1 and not (failed[0].parent / "metrics.json").exists()
    assert len(list((tmp_path / "sweep").rglob("metrics.json"))) == 1  # the other cell ran
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "**FAILED**" in summary and "internal error" in summary


@pytest.mark.slow
def test_ctrl_c_exits_130_in_one_line_and_leaves_nothing_that_looks_complete(tmp_path):
    import signal
    import time

    process = _cli_process("workload=bench_16", "workload.repeats=50", "hydra.run.dir=run", cwd=tmp_path)
    deadline = time.time() + 120
    while not (tmp_path / "run" / ".hydra").is_dir() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # inside the workload
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert [line for line in stderr.splitlines() if line.startswith("dit_engine:")] == [
        "dit_engine: interrupted; the unfinished run left no outputs in place"]
    assert "Traceback" not in stderr
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "plan.txt").exists()
