"""Sweep reports from a fabricated sweep directory: summary.csv, summary.md, pareto.png, CLI and callback."""

from __future__ import annotations

import csv
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from dit_engine.report import SweepReportCallback, collect_cells, write_sweep_report
from dit_engine.report.__main__ import main as report_main
from dit_engine.report.sweep import Cell, pareto_front, reference_cell

#: (job num, overrides, metrics or None for a failed cell). PSNR None = identical to the reference.
QUALITY_SWEEP = [
    (0, ["cache=none", "cache.threshold=0.1", "report=quality"],
     dict(latency=0.40, speedup=1.0, psnr=None, ssim=1.0, mae=0.0, compute=1.0)),
    (1, ["cache=dbcache", "cache.threshold=0.1", "report=quality"],
     dict(latency=0.25, speedup=1.6, psnr=38.5, ssim=0.991, mae=0.004, compute=0.62)),
    (2, ["cache=dbcache", "cache.threshold=0.3", "report=quality"],
     dict(latency=0.17, speedup=2.4, psnr=30.25, ssim=0.95, mae=0.012, compute=0.41)),
    (3, ["cache=fbcache", "cache.threshold=0.1", "report=quality"],
     dict(latency=0.27, speedup=1.5, psnr=36.0, ssim=0.985, mae=0.005, compute=0.66)),
    (4, ["cache=fbcache", "cache.threshold=0.3", "report=quality"], None),
    (5, ["cache=none", "cache.threshold=0.3", "report=quality"],
     dict(latency=0.41, speedup=0.97, psnr=None, ssim=1.0, mae=0.0, compute=1.0)),
]
QUALITY_FRONT = {0, 1, 2}  # 3 is beaten by 1 on both axes, 5 by 0 on speed at equal (infinite) PSNR


def metrics_json(overrides: list[str], latency: float, compute: float, speedup: float | None = None,
                 psnr: float | None = None, ssim: float | None = None, mae: float | None = None, quality: bool = True) -> dict:
    """A metrics.json with the fields the report reads (plus a few it must ignore)."""
    metrics = {
        "run": {"overrides": overrides, "host": "test"},
        "latency": {"total_s": latency, "per_repeat_s": [latency]},
        "compute": {"compute_fraction": compute, "hit_ratio": 1 - compute},
        "memory": {"peak_rss_mb": 512.25},
        "objective": None,
    }
    if quality:
        metrics["quality"] = {
            "aggregate": {"psnr": psnr, "ssim": ssim, "mae": mae, "psnr_min": psnr},
            "speedup_vs_reference": speedup,
            "reference": {"latency_s": 0.4},
        }
    return metrics


def make_cell(sweep: Path, num: int, overrides: list[str], metrics: dict | None, choices: dict | None = None) -> Path:
    """One cell directory as Hydra and the engine write it (``metrics=None``: the run failed)."""
    cell = sweep / f"{num}_{','.join(sorted(overrides))}"
    (cell / ".hydra").mkdir(parents=True)
    (cell / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if choices is not None:
        (cell / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"runtime": {"choices": choices}}}))
    if metrics is not None:
        (cell / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return cell


@pytest.fixture
def quality_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweeps" / "2026-11-25" / "12-00-00-000000"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    for num, overrides, values in QUALITY_SWEEP:
        make_cell(sweep, num, overrides, None if values is None else metrics_json(overrides, **values))
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str) -> float | None:
    return None if text == "" else float(text)


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert 800 <= image.width <= 2000 and 500 <= image.height <= 1400, image.size


def test_csv_rows_equal_each_cells_metrics(quality_sweep: Path) -> None:
    paths = write_sweep_report(quality_sweep)
    assert set(paths) == {"csv", "md", "png", "html"} and all(p.parent == quality_sweep for p in paths.values())
    rows = read_csv(paths["csv"])
    assert [row["name"].split("_")[0] for row in rows] == [str(num) for num, _, _ in QUALITY_SWEEP]
    for row, (num, overrides, values) in zip(rows, QUALITY_SWEEP):
        assert row["overrides"].split() == overrides
        if values is None:
            assert row["status"] == "failed"
            assert all(row[k] == "" for k in ("latency_s", "speedup", "psnr", "ssim", "mae", "compute_fraction"))
            continue
        metrics = json.loads((quality_sweep / row["name"] / "metrics.json").read_text())
        quality = metrics["quality"]
        assert row["status"] == "ok"
        assert number(row["latency_s"]) == metrics["latency"]["total_s"]
        assert number(row["speedup"]) == quality["speedup_vs_reference"]
        assert number(row["compute_fraction"]) == metrics["compute"]["compute_fraction"]
        expected_psnr = math.inf if quality["aggregate"]["psnr"] is None else quality["aggregate"]["psnr"]
        assert number(row["psnr"]) == expected_psnr
        assert number(row["ssim"]) == quality["aggregate"]["ssim"]
        assert number(row["mae"]) == quality["aggregate"]["mae"]
        assert number(row["peak_memory_mb"]) == metrics["memory"]["peak_rss_mb"]
        assert row["pareto"] == ("1" if num in QUALITY_FRONT else "0")


def test_pareto_front_and_markdown(quality_sweep: Path) -> None:
    cells = collect_cells(quality_sweep)
    assert {c.job_num for c in cells if c.pareto} == QUALITY_FRONT
    failed = [c for c in cells if not c.ok]
    assert [c.job_num for c in failed] == [4] and "metrics.json" in failed[0].error

    write_sweep_report(quality_sweep)
    markdown = (quality_sweep / "summary.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(table) == len(QUALITY_SWEEP)
    # cells are named by their job number and what differs between cells: report=quality, shared
    # by every cell, is left out
    assert [c.label for c in cells][:2] == ["#0 cache=none threshold=0.1", "#1 cache=dbcache threshold=0.1"]
    for cell in cells:
        assert f"`{cell.label}`" in markdown and "report=quality" not in cell.label
    failed_row = next(line for line in table if line.startswith("| `#4 "))
    assert "FAILED" in failed_row
    assert "∞" in next(line for line in table if line.startswith("| `#0 "))
    assert "38.50" in next(line for line in table if line.startswith("| `#1 "))
    front_line = next(line for line in markdown.splitlines() if line.startswith("**Pareto front**"))
    assert all(f"`{c.label}`" in front_line for c in cells if c.pareto)
    assert not any(f"`{c.label}`" in front_line for c in cells if not c.pareto)
    assert any(line.startswith("**Reference:**") and "report=quality" in line for line in markdown.splitlines())
    assert_valid_png(quality_sweep / "pareto.png")


def test_pareto_front_rules() -> None:
    def cell(name: str, speedup: float | None, psnr: float | None, status: str = "ok") -> Cell:
        return Cell(f"{name}_x", Path(name), [], status, speedup=speedup, psnr=psnr)

    cells = [
        cell("0", 1.0, math.inf), cell("1", 1.0, math.inf),  # equal points do not dominate each other
        cell("2", 0.9, math.inf),  # slower at the same (infinite) PSNR: dominated
        cell("3", 2.0, 30.0), cell("4", 2.0, 29.0), cell("5", 3.0, 20.0),
        cell("6", 9.0, None), cell("7", 9.0, 50.0, status="failed"),  # no PSNR / failed: never on the front
    ]
    assert {c.name[0] for c in pareto_front(cells)} == {"0", "1", "3", "5"}


def test_speedup_from_the_no_acceleration_cell_without_report_quality(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for num, overrides, latency, compute in [(0, ["cache=dbcache", "cache.threshold=0.1"], 0.2, 0.6),
                                             (1, ["cache=none", "cache.threshold=0.1"], 0.4, 1.0),
                                             (2, ["cache=none", "cache.threshold=0.2"], 0.5, 1.0)]:
        make_cell(sweep, num, overrides, metrics_json(overrides, latency, compute, quality=False))
    cells = collect_cells(sweep)
    assert reference_cell(cells).job_num == 1  # the first no-acceleration cell
    assert [c.speedup for c in cells] == [pytest.approx(2.0), pytest.approx(1.0), pytest.approx(0.8)]
    assert all(c.psnr is None and c.ssim is None and not c.pareto for c in cells)
    paths = write_sweep_report(sweep)
    assert "`#1 cache=none threshold=0.1`" in next(
        line for line in paths["md"].read_text().splitlines() if line.startswith("**Reference:**"))
    assert read_csv(paths["csv"])[0]["speedup"] == repr(0.4 / 0.2)
    assert_valid_png(paths["png"])


def test_reference_cell_follows_hydra_choices_and_blank_speedup_without_one(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # No cache override, but Hydra recorded the group's (changed) default: dbcache, so not a reference.
    make_cell(sweep, 0, ["cache.threshold=0.1"], metrics_json(["cache.threshold=0.1"], 0.2, 0.6, quality=False),
              choices={"model": "tiny", "cache": "dbcache", "quant": "none", "hydra/sweeper": "basic"})
    make_cell(sweep, 1, ["quant=none"], metrics_json(["quant=none"], 0.3, 0.6, quality=False),
              choices={"model": "tiny", "cache": "fbcache", "quant": "none"})
    cells = collect_cells(sweep)
    assert reference_cell(cells) is None
    assert all(c.speedup is None for c in cells)
    markdown = write_sweep_report(sweep)["md"].read_text()
    assert "speedup is blank" in markdown


def test_unreadable_metrics_and_nested_cell_dirs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    broken = make_cell(sweep, 0, ["cache=dbcache"], None)
    (broken / "metrics.json").write_text("{not json")
    # Hydra does not escape "/" in override_dirname: this cell lives three folders down.
    nested = sweep / "1_model.pretrained=" / "models" / "flux"
    (nested / ".hydra").mkdir(parents=True)
    (nested / ".hydra" / "overrides.yaml").write_text("- model.pretrained=/models/flux\n")
    (nested / "metrics.json").write_text(json.dumps(metrics_json(["model.pretrained=/models/flux"], 0.3, 1.0, quality=False)))
    cells = collect_cells(sweep)
    assert [(c.name, c.status) for c in cells] == [("0_cache=dbcache", "failed"), ("1_model.pretrained=/models/flux", "ok")]
    assert "unreadable metrics.json" in cells[0].error
    assert cells[1].speedup == pytest.approx(1.0)  # it is its own no-acceleration reference


def test_cli_regenerates_the_report(quality_sweep: Path) -> None:
    for name in ("summary.csv", "summary.md", "pareto.png"):
        (quality_sweep / name).unlink(missing_ok=True)
    result = subprocess.run([sys.executable, "-m", "dit_engine.report", str(quality_sweep)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert [Path(line).name for line in printed[:3]] == ["summary.csv", "summary.md", "pareto.png"]
    assert all(Path(line).is_file() for line in printed[:3])
    assert sum(line.startswith("| `") for line in printed) == len(QUALITY_SWEEP)
    assert_valid_png(quality_sweep / "pareto.png")


@pytest.mark.parametrize("make_dir, expected", [(False, "no sweep directory"), (True, "holds no sweep cells")])
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, make_dir: bool, expected: str) -> None:
    target = tmp_path / "not-a-sweep"
    if make_dir:
        target.mkdir()
        (target / "notes.txt").write_text("hello")
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(target)])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("dit_engine: error: ") and expected in stderr[0], stderr


def test_cli_missing_argument_is_one_line_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        report_main([])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("dit_engine: error: "), stderr


def test_callback_writes_the_report(quality_sweep: Path, caplog) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(quality_sweep)}}})
    with caplog.at_level(logging.INFO, logger="dit_engine.report"):
        SweepReportCallback().on_multirun_end(config)
    assert (quality_sweep / "summary.csv").is_file() and (quality_sweep / "summary.md").is_file()
    assert_valid_png(quality_sweep / "pareto.png")
    assert any("summary.md" in record.getMessage() for record in caplog.records)


def test_callback_never_raises(tmp_path: Path, caplog) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}})
    with caplog.at_level(logging.ERROR, logger="dit_engine.report"):
        SweepReportCallback().on_multirun_end(config)
        SweepReportCallback().on_multirun_end(OmegaConf.create({}))  # no hydra node at all
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and "not written" in errors[0].getMessage()
