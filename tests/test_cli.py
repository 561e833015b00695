"""End-to-end runs of ``python -m dit_engine`` in a subprocess, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dit_engine.testing.cli import run_cli
from dit_engine.testing.pages import assert_page_images_load

pytestmark = pytest.mark.slow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def dit_engine(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dit_engine", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dit_engine: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args,expected", [
    (["+cache.foo=1"], "unknown key cache.foo"),
    (["cache=dbcache", "cache.threshold=-1"], "cache.threshold=-1.0 must be >= 0"),
    (["workload.prompts=[cat]"], "unknown prompt 'cat' for the tiny model"),
    (["workload.height=32"], "the tiny model generates 16x16 images only"),
    (["threads=0"], "threads=0: use 1 or more"),
    (["-m", "cache=dbcache", "cache.threshold=0.1,-1"], "sweep cell [cache=dbcache cache.threshold=-1]"),
])
def test_config_mistakes_answer_before_torch_is_imported(tmp_path, args, expected):
    """The errors a config alone decides come before torch (and diffusers) load: torch is replaced
    by a module that fails on import, and the CLI still answers with its one line (in well under a
    second instead of the 5-9 s those imports take; timed in docs/performance.md, not here)."""
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch was imported before the config was checked')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(poison.parent), ENV.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "dit_engine", *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert_one_line_error(result, expected)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One default run (embedded model, no cache) and one DBCache run, shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    plain = dit_engine("hydra.run.dir=plain", "workload.repeats=2", "workload.warmup=1", cwd=root)
    cached = dit_engine("cache=dbcache", "hydra.run.dir=cached", "workload.repeats=2", "workload.warmup=1", cwd=root)
    return root, plain, cached


def test_default_run_writes_images_sheet_plan_and_metrics(default_run):
    root, plain, _ = default_run
    assert plain.returncode == 0, plain.stderr
    run_dir = root / "plain"
    images = sorted((run_dir / "images").glob("*.png"))
    assert len(images) == 10 and images[0].name == "000_zero.png"
    assert (run_dir / "contact_sheet.png").stat().st_size > 1000
    assert "adapt.step_state" in (run_dir / "plan.txt").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["latency"]["total_s"] > 0 and len(metrics["latency"]["per_repeat_s"]) == 2
    assert len(metrics["latency"]["steps_s"]) == 2 * 28
    assert metrics["compute"]["blocks_computed"] == metrics["compute"]["blocks_total"] == 2 * 10 // 10 * 28 * 12
    assert metrics["memory"]["peak_rss_mb"] > 0
    assert metrics["config"]["cache"]["name"] == "none"
    assert metrics["providers"]["adapter"]["distribution"] == "dit_engine"
    assert set(metrics["providers"]["transforms"]) == {"adapt.step_state"}
    assert "%|" in plain.stderr  # a progress bar was shown


def test_dbcache_run_reports_hits_and_saved_work(default_run):
    # Wall-clock speed is checked side by side in benchmarks/, never by a timed unit test.
    root, plain, cached = default_run
    assert cached.returncode == 0, cached.stderr
    fast = json.loads((root / "cached" / "metrics.json").read_text())
    assert fast["cache"]["hit_ratio"] > 0.3
    assert fast["compute"]["compute_fraction"] < 0.75
    assert fast["latency"]["total_s"] > 0 and len(fast["latency"]["steps_s"]) == 2 * 28
    assert fast["providers"]["transforms"]["cache.dbcache"]["distribution"] == "dit_engine"
    branches = fast["compute"]["transforms"]["cache.dbcache"]["branches"]
    assert all(len(mask) == 28 for mask in branches["transformer/cfg0"]["masks"])
    # the compute strip: one row per request of the branch, a legend below
    strip = Image.open(root / "cached" / "compute_strip.png")
    assert strip.width > 28 * 12 and strip.height >= 16 * (len(branches["transformer/cfg0"]["masks"]) + 2)
    assert not (root / "plain" / "compute_strip.png").exists()  # nothing cached, nothing to draw


def test_dry_run_prints_the_plan_and_loads_nothing(tmp_path):
    result = dit_engine("model=flux", "dry_run=true", "cache=dbcache", "hydra.run.dir=dry", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "adapter 'flux'" in result.stdout and "DBCache F1B1 over 57 blocks" in result.stdout
    written = sorted(p.name for p in (tmp_path / "dry").iterdir() if not p.name.startswith("."))
    assert written == ["dit_engine.log", "plan.txt"]


def test_multirun_sweep_writes_one_directory_per_cell(tmp_path):
    result = dit_engine(
        "-m", "cache=none,dbcache", "cache.threshold=0.05,0.2", "workload.prompts=[one,seven]",
        "workload.num_inference_steps=8", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    cells = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(cells) == 4
    for cell in cells:
        metrics = json.loads((cell / "metrics.json").read_text())
        assert f"cache={metrics['config']['cache']['name']}" in cell.name
    assert_page_images_load(tmp_path / "sweep" / "summary.html", expected=1 + 4 + 2)  # plot, 4 sheets, 2 strips
    output = result.stdout + result.stderr  # progress after every cell, an estimate until the last
    assert [f"sweep: cell {i}/4 done" in output for i in range(1, 5)] == [True] * 4
    assert output.count("left") >= 3


def test_flux_from_a_local_directory(tmp_path):
    from dit_engine.testing import save_tiny_flux_pipeline

    save_tiny_flux_pipeline(tmp_path / "tiny-flux")
    result = dit_engine(
        "model=flux", f"model.pretrained={tmp_path / 'tiny-flux'}", "model.dtype=float32", "cache=dbcache",
        "workload.height=32", "workload.width=32", "workload.num_inference_steps=6", "workload.prompts=[a cat]",
        "+workload.call_kwargs.max_sequence_length=16", "hydra.run.dir=flux", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "flux" / "metrics.json").read_text())
    assert metrics["model"]["adapter"] == "flux"
    assert metrics["model"]["blocks"] == {"transformer_blocks": 2, "single_transformer_blocks": 4}
    assert metrics["compute"]["steps_total"] == 6
    assert (tmp_path / "flux" / "images" / "000_a_cat.png").exists()


#: bad inputs checked through a real ``python -m dit_engine`` process: one refused at compose time,
#: one at plan time, one in a sweep; the others run the CLI in-process
SUBPROCESS_CASES = (["cache=dbcachee"], ["workload.prompts=[cat]"], ["-m", "cache=dbcache", "cache.threshold=0.1,-1"])


@pytest.mark.parametrize(
    "args,expected",
    [
        (["cache=dbcachee"], "unknown option cache=dbcachee; available cache options: cachedit_dbcache, calibrate, calibration_run, dbcache,"),
        (["cache=dbcache", "cache.threshhold=0.1"], "unknown key cache.threshhold"),
        (["cache=dbcache", "cache.threshold=-0.5"], "cache.threshold=-0.5 must be >= 0"),
        (["cache=dbcache", "cache.threshold=fast"], "cache.threshold=fast is not a valid float"),
        (["cache=dbcache", "cache.front_blocks=6", "cache.back_blocks=6"], "keep their sum below 12"),
        (["model=flux", "model.pretrained=/no/such/flux"], "model.pretrained=/no/such/flux does not exist"),
        (["workload.prompts=[cat]"], "unknown prompt 'cat' for the tiny model; known prompts: zero, one"),
        (["-m", "cache=dbcache", "cache.threshold=0.1,-1"], "sweep cell [cache=dbcache cache.threshold=-1]"),
        (["cache=scm", "cache.mask=10x1"], "cache.mask=10x1 has characters other than 0 and 1"),
        (["cache=dbcache", "calibrator=taylorseer", "calibrator.order=-2"], "calibrator.order=-2: use 1, 2 or 3"),
        (["cache=dbprune", "calibrator=taylorseer"], "calibrator=taylorseer cannot bind to cache.dbprune"),
        (["model=wan", "cache=teacache", "dry_run=true"], "no published teacache coefficients; run `python -m dit_engine cache=fit_signals`"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, monkeypatch, args, expected):
    earlier = tmp_path / "outputs" / "runs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text("{}")
    if args in SUBPROCESS_CASES:  # the real process: exit code and stderr as a shell sees them
        result = dit_engine(*args, cwd=tmp_path)
    else:  # the same code path in this process (start-up is most of a subprocess case's time)
        monkeypatch.chdir(tmp_path)
        code, stderr = run_cli(*args)
        result = subprocess.CompletedProcess(args, code, "", stderr)
    assert_one_line_error(result, expected)
    assert [p.name for p in (tmp_path / "outputs" / "runs").iterdir()] == ["earlier"]
    assert (earlier / "metrics.json").read_text() == "{}"


def test_a_run_and_each_sweep_cell_are_planned_once(tmp_path, monkeypatch):
    """The plan check plans before Hydra runs anything and hands each job its plan: no job plans again."""
    from dit_engine.session import Session

    prepared, prepare = [], Session.prepare

    def counted(self, *args, **kwargs):
        prepared.append(sorted(self.overrides))
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(Session, "prepare", counted)
    monkeypatch.chdir(tmp_path)
    code, stderr = run_cli("dry_run=true", "hydra.run.dir=one")
    assert code == 0, stderr
    assert prepared == [["dry_run=true"]]
    prepared.clear()
    code, stderr = run_cli("-m", "dry_run=true", "cache=none,dbcache", "hydra.sweep.dir=sweep")
    assert code == 0, stderr
    assert sorted(prepared) == [["cache=dbcache", "dry_run=true"], ["cache=none", "dry_run=true"]]  # the check's, none by the jobs
