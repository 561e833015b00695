"""Measurement: workloads, report=quality against a cached reference, objectives, profiler,
sweeps through Hydra's joblib launcher and Optuna sweeper, and the sweep report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dit_engine.config import compose_config
from conftest import prepare
from dit_engine.run_metrics import objective
from dit_engine.errors import PlanError
from dit_engine.testing.cli import run_cli
from test_cli import dit_engine


def cells_of(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_num_prompts_cycles_the_prompts_with_one_seed_each():
    workload = prepare(compose_config(["workload=bench_16"])).workload
    assert len(workload.prompts) == 16 and workload.prompts[10] == "zero"
    assert [len(b) for b in workload.batches()] == [4, 4, 4, 4]
    assert prepare(compose_config(["workload=one_prompt"])).workload.prompts == ["zero"]


def test_objectives():
    report = OmegaConf.create({"objective": "speedup", "psnr_floor": 30.0})
    metrics = {"latency": {"total_s": 2.0}, "quality": {"speedup_vs_reference": 1.8, "aggregate": {"psnr": 33.0}}}
    assert objective(report, metrics) == 1.8
    metrics["quality"]["aggregate"]["psnr"] = 29.0
    assert objective(report, metrics) == 0.0  # below the floor: infeasible
    metrics["quality"]["aggregate"]["psnr"] = math.inf
    assert objective(report, metrics) == 1.8  # identical to the reference
    assert objective(OmegaConf.create({"objective": "latency"}), metrics) == 2.0


def test_compute_objective_is_the_compute_fraction_under_the_floor():
    report = OmegaConf.create({"objective": "compute", "psnr_floor": 30.0})
    metrics = {"latency": {"total_s": 2.0}, "compute": {"compute_fraction": 0.4},
               "quality": {"speedup_vs_reference": 9.9, "aggregate": {"psnr": 33.0}}}
    assert objective(report, metrics) == 0.4  # no clock in it: the speedup does not matter
    metrics["quality"]["aggregate"]["psnr"] = math.inf
    assert objective(report, metrics) == 0.4
    metrics["quality"]["aggregate"]["psnr"] = 27.0  # below the floor: worse than any feasible (<= 1.0) ...
    assert objective(report, metrics) == pytest.approx(1.1)
    metrics["quality"]["aggregate"]["psnr"] = 15.0  # ... and the further below, the worse
    assert objective(report, metrics) == pytest.approx(1.5)


def test_quality_objectives_need_the_reference():
    with pytest.raises(PlanError, match="report.objective=speedup needs the reference run: use report=quality"):
        prepare(compose_config(["report.objective=speedup"]))
    with pytest.raises(PlanError, match="report.objective=compute needs the reference run: use report=quality"):
        prepare(compose_config(["report.objective=compute"]))
    with pytest.raises(PlanError, match="report.reference_timing=cached would reuse another moment's timing"):
        prepare(compose_config(["report=quality", "report.objective=speedup", "report.reference_timing=cached"]))
    with pytest.raises(PlanError, match="report.objective=fast is unknown"):
        prepare(compose_config(["report.objective=fast"]))


@pytest.fixture(scope="module")
def quality_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    result = dit_engine("-m", "cache=none,dbcache,fbcache", "report=quality", "quiet=true", "hydra.sweep.dir=sweep", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def test_quality_sweep_runs_the_reference_once(quality_sweep):
    cells = cells_of(quality_sweep / "sweep")
    metrics = [json.loads((cell / "metrics.json").read_text()) for cell in cells]
    assert len(metrics) == 3
    # one reference, and no lock file left behind
    assert [p.name for p in (quality_sweep / "outputs" / "references").iterdir()] == [metrics[0]["quality"]["reference"]["key"]]
    assert len({m["quality"]["reference"]["key"] for m in metrics}) == 1
    assert sum(not m["quality"]["reference"]["reused"] for m in metrics) == 1
    by_cache = {m["config"]["cache"]["front_blocks"] if m["config"]["cache"]["name"] != "none" else "none": m for m in metrics}
    plain = by_cache["none"]["quality"]
    assert plain["aggregate"]["psnr"] is None and plain["aggregate"]["identical"] == 10  # inf written as null
    for m in metrics:
        assert len(m["quality"]["per_image"]) == 10
        if m["config"]["cache"]["name"] != "none":
            assert 30 < m["quality"]["aggregate"]["psnr"] < 100
            assert 0 < m["quality"]["aggregate"]["ssim"] <= 1
            assert m["objective"] == m["quality"]["speedup_vs_reference"]


def test_quality_sweep_writes_a_consistent_report(quality_sweep):
    sweep = quality_sweep / "sweep"
    for name in ("summary.csv", "summary.md", "pareto.png"):
        assert (sweep / name).is_file(), name
    with open(sweep / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    for row, cell in zip(sorted(rows, key=lambda r: r["name"]), cells_of(sweep)):
        metrics = json.loads((cell / "metrics.json").read_text())
        assert float(row["latency_s"]) == pytest.approx(metrics["latency"]["total_s"], rel=1e-3)
        assert float(row["compute_fraction"]) == pytest.approx(metrics["compute"]["compute_fraction"], rel=1e-3)
    markdown = (sweep / "summary.md").read_text()
    # cells are named by what differs between them: report=quality and quiet=true are in every cell
    assert sorted(row["label"] for row in rows) == ["#0 cache=none", "#1 cache=dbcache", "#2 cache=fbcache"]
    assert all(f"`{row['label']}`" in markdown for row in rows)


def test_profile_writes_a_chrome_trace(tmp_path):
    result = dit_engine("report.profile=true", "workload=one_prompt", "quiet=true", "hydra.run.dir=prof", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "prof" / "trace.json"
    trace = json.loads(path.read_text())
    assert any("transformer" in str(event.get("name", "")).lower() or "aten::" in str(event.get("name", "")) for event in trace["traceEvents"])
    profile = json.loads((tmp_path / "prof" / "metrics.json").read_text())["profile"]
    assert profile["trace"] == str(path) and profile["size_mb"] == pytest.approx(path.stat().st_size / 2**20, abs=1e-3)
    assert "transformer call 3" in profile["recorded"] and profile["record_shapes"] is False
    assert path.stat().st_size < 4 * 2**20  # one denoising step, not the whole request's ~30 MB


def test_joblib_launcher_cells_share_one_reference(tmp_path):
    result = dit_engine(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "cache=none,fbcache", "report=quality",
        "workload=smoke", "quiet=true", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    metrics = [json.loads((cell / "metrics.json").read_text()) for cell in cells_of(tmp_path / "sweep")]
    assert len(metrics) == 2
    assert len({m["quality"]["reference"]["key"] for m in metrics}) == 1
    assert (tmp_path / "sweep" / "summary.md").is_file()


def test_optuna_search_three_trials(tmp_path):
    result = dit_engine("-m", "+experiment=tiny_optuna_dbcache", "hydra.sweeper.n_trials=3", "hydra.sweep.dir=opt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(cells_of(tmp_path / "opt")) == 3
    best = yaml.safe_load((tmp_path / "opt" / "optimization_results.yaml").read_text())
    trials = [json.loads((c / "metrics.json").read_text()) for c in cells_of(tmp_path / "opt")]
    # the objective is the compute fraction under the PSNR floor (no clock): minimised
    for trial in trials:
        psnr = trial["quality"]["aggregate"]["psnr"]
        feasible = psnr is None or psnr >= 35.0  # null: identical to the reference
        assert (trial["objective"] == trial["compute"]["compute_fraction"]) == feasible
        assert (trial["objective"] <= 1.0) == feasible
    assert best["best_value"] == pytest.approx(min(t["objective"] for t in trials))
    assert set(best["best_params"]) == {"cache.threshold", "cache.front_blocks", "cache.back_blocks", "cache.warmup_steps"}
    # Optuna's and the sweeper's set-up lines are gone; the best trial is still reported
    output = result.stdout + result.stderr
    noise = ("setup plugin", "A new study created", "Study name:", "Storage:", "Sampler:", "Directions:")
    assert not [word for word in noise if word in output]
    assert "Best value:" in output


def test_speedup_objective_is_timed_from_interleaved_pairs(tmp_path):
    result = dit_engine("report=quality", "report.objective=speedup", "cache=dbcache", "workload=smoke", "quiet=true",
                        "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    reference = metrics["quality"]["reference"]
    pairs = reference["pairs"]
    assert reference["timing"] == "interleaved" and len(pairs["plain_s"]) == len(pairs["accelerated_s"]) == 3
    ratios = sorted(p / a for p, a in zip(pairs["plain_s"], pairs["accelerated_s"]))
    assert metrics["quality"]["speedup_vs_reference"] == pytest.approx(ratios[1])  # the median pair
    # speedups on the run's clock (the process's CPU time on a CPU), the wall latency beside it
    assert metrics["quality"]["speedup_clock"] == metrics["latency"]["clock"] == "cpu_time"
    assert reference["clock_s"] == pytest.approx(sorted(pairs["plain_s"])[1])
    assert reference["latency_s"] == pytest.approx(sorted(pairs["plain_wall_s"])[1])
    assert metrics["objective"] == metrics["quality"]["speedup_vs_reference"]
    # the counters cover the accelerated timed runs only, as without interleaving
    assert metrics["compute"]["steps_total"] == metrics["workload"]["repeats"] * 4  # 4 steps, one batched call each


def test_signal_fit_feeds_teacache_and_magcache(tmp_path):
    result = dit_engine("cache=fit_signals", "workload=one_prompt", "quiet=true", "hydra.run.dir=fit", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    final = next(line for line in (result.stdout + result.stderr).splitlines() if "done:" in line)  # shown despite quiet
    assert final.endswith(f"calibration.json: {tmp_path / 'fit' / 'calibration.json'}")
    assert json.loads((tmp_path / "fit" / "metrics.json").read_text())["artifacts"] == ["calibration.json"]
    signals = json.loads((tmp_path / "fit" / "calibration.json").read_text())
    entry = signals["transformers"]["transformer"]
    assert len(entry["teacache"]["coefficients"]) == 5
    assert len(entry["magcache"]["mag_ratios"]) == 28 and entry["magcache"]["mag_ratios"][0] == 1.0
    file = tmp_path / "fit" / "calibration.json"
    # cache.calibration_file is the old name of cache.signals_file
    for cache, key in (("teacache", "signals_file"), ("magcache", "calibration_file")):
        prepared = prepare(compose_config([f"cache={cache}", f"cache.{key}={file}"]))
        assert str(file) in prepared.plan.explain()


def test_the_old_names_of_the_signal_fit_still_compose():
    assert compose_config(["cache=calibration_run"]).cache.name == "fit_signals"
    assert compose_config(["cache=teacache", "cache.calibration_file=x.json"]).cache.signals_file == "x.json"


def test_clip_score_from_a_local_model(tmp_path, monkeypatch):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from dit_engine.testing import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=600, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                         max_position_embeddings=77, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(tmp_path / "clip")
    result = dit_engine(f"report.clip_model={tmp_path / 'clip'}", "workload.prompts=[one,seven]", "quiet=true", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    clip = json.loads((tmp_path / "run" / "metrics.json").read_text())["clip_score"]
    assert len(clip["per_image"]) == 2 and all(0 <= s <= 100 for s in clip["per_image"])
    assert clip["mean"] == pytest.approx(sum(clip["per_image"]) / 2)
    monkeypatch.chdir(tmp_path)  # the refusal through the CLI's code path in this process (start-up is most of a subprocess)
    code, stderr = run_cli("report.clip_model=/no/clip")
    assert code == 2 and "is not a local CLIP model directory" in stderr
