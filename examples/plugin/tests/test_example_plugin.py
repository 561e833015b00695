"""The example plugin through dit_engine's conformance suites, and its options end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dit_engine.testing.conformance import AdapterConformance, PipelineCase, TransformConformance, tiny_model_case
from dit_engine_example.tiny import build_tiny_dit_pipeline, save_tiny_dit_pipeline

STEPS = 6


def dit_case() -> PipelineCase:
    def call(guidance_scale: float = 1.0):
        return dict(prompt=["1", "7"], num_inference_steps=STEPS, guidance_scale=guidance_scale,
                    generator=torch.Generator().manual_seed(0), output_type="np")

    return PipelineCase(build_tiny_dit_pipeline(seed=0), call)


class TestExampleDiTAdapter(AdapterConformance):
    adapter_name = "example_dit"

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls):
        return dit_case()


class TestEveryNthOnTheTinyModel(TransformConformance):
    overrides = ("cache=every_nth", "cache.interval=2", "cache.warmup_steps=1")
    exact_overrides = ("cache=every_nth", "cache.interval=1")

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls):
        return tiny_model_case(STEPS)


class TestEveryNthWithTaylorSeerOnDiT(TransformConformance):
    overrides = ("cache=every_nth", "cache.interval=2", "cache.warmup_steps=1", "calibrator=taylorseer")
    exact_overrides = ("cache=every_nth", "cache.interval=1", "calibrator=taylorseer")

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls):
        return dit_case()


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dit_engine", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_plugin_options_show_under_help(tmp_path):
    result = _cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    groups = {line.split(":")[0]: line for line in result.stdout.splitlines() if ": " in line}
    assert "every_nth" in groups["cache"] and "example_dit" in groups["model"]


def test_the_plugin_options_run_from_the_cli(tmp_path):
    model = save_tiny_dit_pipeline(tmp_path / "tiny-dit")
    result = _cli("model=example_dit", f"model.pretrained={model}", "model.device=cpu", "cache=every_nth",
                  "workload.num_inference_steps=6", "workload.prompts=[1,7]", "quiet=true", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = (tmp_path / "run" / "plan.txt").read_text()
    assert "adapter 'example_dit' (dit_engine_example 0.1.0)" in plan
    assert "cache.every_nth" in plan and "[group cache; dit_engine_example 0.1.0]" in plan
    bad = _cli("model=example_dit", f"model.pretrained={model}", "workload.prompts=[cat]", cwd=tmp_path)
    assert bad.returncode == 2 and "takes ImageNet class ids 0-999" in bad.stderr
