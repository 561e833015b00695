"""benchmarks/gpu_check.py without a GPU: its ``--dry-run`` and its refusal to run for real.

The GPU script itself cannot run here; its dry run builds FLUX.1-dev's configuration on the meta
device and plans every variant, which is what a CPU can check before a GPU is lent.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
VARIANTS = (
    "compile=regional",
    "quant=fp8_dynamic",
    "quant=fp8_dynamic compile=regional",
    "quant=fp8_dynamic compile=regional cache=dbcache",
    "quant=fp8_dynamic compile=regional cache=scm_static calibrator=taylorseer",
)
PARALLEL = ("parallel=ulysses2 (2 GPUs)", "parallel=ring2 (2 GPUs)")


def flux_dev_parameters() -> int:
    """FLUX.1-dev's transformer parameter count, layer by layer from its architecture (width 3072 =
    24 heads x 128, MLP 4x, 19 double-stream and 38 single-stream blocks), not from the script."""
    d, head, mlp = 3072, 128, 4 * 3072

    def linear(i: int, o: int) -> int:
        return i * o + o

    embedders = (linear(64, d) + linear(4096, d)  # latents, T5 text
                 + 2 * (linear(256, d) + linear(d, d))  # timestep, guidance
                 + linear(768, d) + linear(d, d))  # pooled CLIP
    double = (2 * linear(d, 6 * d)  # AdaLN-Zero of the image and text streams
              + 8 * linear(d, d)  # q, k, v, out for each stream
              + 4 * head  # RMSNorm of q and k for each stream
              + 2 * (linear(d, mlp) + linear(mlp, d)))  # feed-forward of each stream
    single = linear(d, 3 * d) + 3 * linear(d, d) + 2 * head + linear(d, mlp) + linear(d + mlp, d)
    final = linear(d, 2 * d) + linear(d, 64)
    return embedders + 19 * double + 38 * single + final


@pytest.fixture(scope="module")
def dry_run() -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_dry_run_counts_flux_dev_parameters(dry_run):
    found = re.search(r"parameters: ([\d,]+) .*bf16 weights: ([\d,]+) bytes", dry_run)
    assert found, dry_run
    count, weight_bytes = (int(group.replace(",", "")) for group in found.groups())
    assert count == flux_dev_parameters()
    assert abs(count - 11.9e9) / 11.9e9 < 0.01
    assert weight_bytes == 2 * count


def test_dry_run_plans_every_variant(dry_run):
    lines = dry_run.splitlines()
    assert any(line.strip().startswith("eager: ") for line in lines), dry_run
    for label in VARIANTS:
        assert any(line.strip().startswith(f"{label}: plan ok") for line in lines), f"{label}\n{dry_run}"
    for label in PARALLEL:  # planned here (no CUDA); on a one-GPU machine they are skipped
        assert any(line.strip().startswith((f"{label}: plan ok", f"{label}: skipped")) for line in lines), f"{label}\n{dry_run}"
    assert "REFUSED" not in dry_run
    for what in ("1024x1024", "28 steps", "2 timed loop", "budget 450 s", "cuda_events"):
        assert what in dry_run


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine would start the real run")
def test_without_dry_run_and_without_cuda_exits_2(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu_check.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    message = done.stderr.strip().splitlines()
    assert len(message) == 1 and "--dry-run" in message[0], done.stderr
    assert not list(tmp_path.iterdir())
