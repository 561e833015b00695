"""conf/ and the embedded weights work from a non-editable install (a wheel), not just the repo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_non_editable_install_composes_and_dry_runs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(REPO)],
        check=True, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert (target / "dit_engine" / "conf" / "cache" / "dbcache.yaml").is_file()
    assert (target / "dit_engine" / "tiny" / "weights" / "tiny_dit.safetensors").is_file()
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "import dit_engine, sys; print(dit_engine.__file__)"],
        env=env, cwd=work, capture_output=True, text=True, timeout=120,
    )
    assert str(target) in result.stdout, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "dit_engine", "cache=fbcache", "dry_run=true", "hydra.run.dir=dry"],
        env=env, cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "DBCache F1B0 over 12 blocks" in result.stdout
