"""Options from the user's own config folders (``--config-dir``, ``hydra.searchpath``), sweeps
defined in a config (checked cell by cell before the first one runs; refused without ``-m``),
internal schemas refused as options, and ``quiet=true`` still saying where the outputs went."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dit_engine.testing.cli import run_cli
from test_cli import ENV, assert_one_line_error


@pytest.fixture
def user_conf(tmp_path: Path) -> Path:
    """A user's config folder: one experiment that runs, one sweep with an impossible cell."""
    conf = tmp_path / "my_conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /cache: dbcache\nworkload:\n  num_inference_steps: 6\n")
    (conf / "experiment" / "threshold_sweep.yaml").write_text(
        "# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      cache: none,dbcache\n"
        "      cache.threshold: 0.1,-1\n")
    (conf / "experiment" / "two_caches.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      cache: none,fbcache\n")
    return conf


def in_dir(path: Path, monkeypatch, *args: str) -> subprocess.CompletedProcess:
    monkeypatch.chdir(path)
    code, stderr = run_cli(*args)
    return subprocess.CompletedProcess(args, code, "", stderr)


@pytest.mark.parametrize("where", ["--config-dir", "hydra.searchpath"])
def test_options_from_a_user_config_dir_run_and_sweep(tmp_path, monkeypatch, user_conf, where):
    source = ["--config-dir", str(user_conf)] if where == "--config-dir" else [f"hydra.searchpath=[file://{user_conf}]"]
    single = in_dir(tmp_path, monkeypatch, *source, "+experiment=mine", "dry_run=true", "hydra.run.dir=one")
    assert single.returncode == 0, single.stderr
    assert "DBCache" in (tmp_path / "one" / "plan.txt").read_text()
    # a sweep's cells are composed again before the first runs: with the same search path
    sweep = in_dir(tmp_path, monkeypatch, "-m", *source, "+experiment=mine", "cache.threshold=0.1,0.2", "dry_run=true",
                   "hydra.sweep.dir=sweep")
    assert sweep.returncode == 0, sweep.stderr
    plans = sorted((tmp_path / "sweep").glob("*/plan.txt"))
    assert len(plans) == 2 and "threshold=0.2" in plans[1].read_text()


def test_an_unknown_option_lists_the_user_config_dir_options_too(tmp_path, monkeypatch, user_conf):
    result = in_dir(tmp_path, monkeypatch, "--config-dir", str(user_conf), "+experiment=nope")
    assert_one_line_error(result, "unknown option experiment=nope; available experiment options: mine, ")
    assert "tiny_optuna_dbcache" in result.stderr and "schema_" not in result.stderr


def test_a_config_defined_sweep_is_checked_before_the_first_cell(tmp_path, monkeypatch, user_conf):
    # the cells come from the experiment's hydra.sweeper.params, not from the command line
    result = in_dir(tmp_path, monkeypatch, "--config-dir", str(user_conf), "+experiment=threshold_sweep", "hydra.sweep.dir=sweep")
    assert_one_line_error(result, "sweep cell [cache=dbcache cache.threshold=-1 +experiment=threshold_sweep]: cache.threshold=-1")
    assert not (tmp_path / "sweep").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("experiment,expected", [
    ("tiny_optuna_dbcache", "+experiment=tiny_optuna_dbcache is a sweep (hydra.sweeper.params: cache.threshold, "),
    ("two_caches", "+experiment=two_caches is a sweep (hydra.sweeper.params: cache); run it with -m: "
                   "python -m dit_engine -m"),
])
def test_a_sweep_experiment_without_dash_m_is_refused(tmp_path, monkeypatch, user_conf, experiment, expected):
    result = in_dir(tmp_path, monkeypatch, "--config-dir", str(user_conf), f"+experiment={experiment}")
    assert_one_line_error(result, expected)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args", [["cache=schema_dbcache"], ["-m", "cache=none,schema_dbcache"], ["model=schema_model"]])
def test_an_internal_schema_is_not_an_option(tmp_path, monkeypatch, args):
    result = in_dir(tmp_path, monkeypatch, *args)
    group = args[-1].split("=")[0]
    assert_one_line_error(result, f"(an internal schema, not an option); available {group} options: ")
    assert "schema_" not in result.stderr.split("options: ")[1]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_quiet_run_still_says_where_its_outputs_went(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dit_engine", "quiet=true", "workload=smoke", "hydra.run.dir=q"],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    shown = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    final = [line for line in shown if "done:" in line]
    assert len(final) == 1 and f"outputs in {tmp_path / 'q'}" in final[0], shown
    assert not [line for line in shown if "[INFO]" in line and "done:" not in line]  # nothing else at INFO
    assert "%|" not in result.stderr  # no progress bars
    log = (tmp_path / "q" / "dit_engine.log").read_text()
    assert "done:" in log and "outputs in" in log
    assert json.loads((tmp_path / "q" / "metrics.json").read_text())["config"]["quiet"] is True
