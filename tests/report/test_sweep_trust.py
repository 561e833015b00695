"""Sweep reports that must not trust a timing spike, and that name cells and the sweep by what
matters: the uncached cell however it was chosen, reference-timing outliers, cell labels, title."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dit_engine.report import collect_cells, write_sweep_report
from dit_engine.report.sweep import pareto_front, reference_cell


def metrics(overrides: list[str], latency: float, compute: float, psnr: float | None, reference_latency: float,
            key: str = "ref0") -> dict:
    """A report=quality cell's metrics.json: speedup against the reference timed in the cell."""
    return {
        "run": {"overrides": overrides},
        "latency": {"total_s": latency},
        "compute": {"compute_fraction": compute},
        "memory": {"peak_rss_mb": 100.0},
        "quality": {
            "aggregate": {"psnr": psnr, "ssim": 0.99, "mae": 0.01},
            "speedup_vs_reference": reference_latency / latency,
            "reference": {"latency_s": reference_latency, "key": key},
        },
    }


ACCELERATION_NONE = {"cache": "none", "calibrator": "none", "parallel": "none", "quant": "none", "compile": "none",
                     "attention": "none", "offload": "none"}


def make_cell(sweep: Path, num: int, overrides: list[str], data: dict, choices: dict) -> None:
    cell = sweep / f"{num}_{','.join(overrides)}"
    (cell / ".hydra").mkdir(parents=True)
    (cell / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (cell / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"runtime": {"choices": choices}}}))
    (cell / "metrics.json").write_text(json.dumps(data))


@pytest.fixture
def spiked_experiment(tmp_path: Path) -> Path:
    """An experiment sweep like tiny_caches_vs_peers: +method=none's own reference run hit a load
    spike (6.88 s against about 0.37 s in every other cell), so its "speedup" is 18.7x."""
    sweep = tmp_path / "scratch" / "sweepdoc3"
    rows = [  # (method, latency, compute, psnr, reference latency)
        ("none", 0.368, 1.0, None, 6.88),
        ("dbcache", 0.20, 0.49, 39.4, 0.37),
        ("fbcache", 0.19, 0.44, 38.6, 0.36),
        ("dbcache_slow", 0.30, 0.76, 48.0, 0.38),
        ("scm_fast", 0.13, 0.32, 36.1, 0.37),
    ]
    for num, (method, latency, compute, psnr, reference) in enumerate(rows):
        overrides = [f"+method={method}", "+experiment=tiny_caches_vs_peers"]
        cache = "none" if method == "none" else method
        choices = {**ACCELERATION_NONE, "cache": cache, "model": "tiny", "report": "quality",
                   "experiment": "tiny_caches_vs_peers", "method": method, "hydra/sweeper": "basic"}
        make_cell(sweep, num, overrides, metrics(overrides, latency, compute, psnr, reference), choices)
    return sweep


def test_the_uncached_cell_of_an_experiment_is_the_reference_cell(spiked_experiment: Path) -> None:
    # +method=none inside +experiment=...: the experiment and method choices are not "none", but
    # every acceleration group is and every block forward ran
    cells = collect_cells(spiked_experiment)
    assert reference_cell(cells).overrides[0] == "+method=none"
    markdown = write_sweep_report(spiked_experiment)["md"].read_text()
    reference = next(line for line in markdown.splitlines() if line.startswith("**Reference:**"))
    assert "**Check the timings:**" in reference and "18.70×" in reference


def test_a_reference_timing_spike_is_flagged_and_kept_off_the_front(spiked_experiment: Path) -> None:
    cells = collect_cells(spiked_experiment)
    spiked = cells[0]
    assert spiked.speedup == pytest.approx(6.88 / 0.368)
    assert spiked.timing_outlier and "6.88 s" in spiked.timing_outlier
    assert [c for c in cells if c.timing_outlier] == [spiked]  # the others' references agree
    assert spiked not in pareto_front(cells) and not spiked.pareto
    assert {c.overrides[0] for c in cells if c.pareto} == {f"+method={m}" for m in ("dbcache", "fbcache", "dbcache_slow", "scm_fast")}
    markdown = write_sweep_report(spiked_experiment)["md"].read_text()
    assert any(line.startswith("**Timing outliers:**") and "`#0 method=none`" in line for line in markdown.splitlines())
    row = next(line for line in markdown.splitlines() if line.startswith("| `#0 "))
    assert "(timing outlier)" in row


def test_outliers_are_judged_per_reference_workload(tmp_path: Path) -> None:
    # two workloads, each with its own reference (key): their reference latencies differ by design
    sweep = tmp_path / "sweep"
    for num, (workload, latency, reference, key) in enumerate([("smoke", 0.05, 0.1, "a"), ("smoke", 0.06, 0.11, "a"),
                                                                 ("smoke", 0.05, 0.1, "a"), ("bench_16", 0.5, 1.0, "b"),
                                                                 ("bench_16", 0.6, 1.1, "b"), ("bench_16", 0.5, 1.0, "b")]):
        overrides = [f"workload={workload}", f"cache.threshold=0.{num + 1}", "cache=dbcache"]
        make_cell(sweep, num, overrides, metrics(overrides, latency, 0.5, 35.0, reference, key),
                  {**ACCELERATION_NONE, "cache": "dbcache", "workload": workload})
    assert not any(c.timing_outlier for c in collect_cells(sweep))


def test_cells_are_named_by_what_differs_and_the_plot_by_the_experiment(spiked_experiment: Path, monkeypatch) -> None:
    import dit_engine.report.plot as plot

    titles = []
    original = plot.pareto_plot
    monkeypatch.setattr(plot, "pareto_plot", lambda cells, path, title=None: titles.append(title) or original(cells, path, title))
    paths = write_sweep_report(spiked_experiment)
    cells = collect_cells(spiked_experiment)
    # +experiment=tiny_caches_vs_peers is in every cell: not part of any name
    assert [c.label for c in cells] == ["#0 method=none", "#1 method=dbcache", "#2 method=fbcache",
                                        "#3 method=dbcache_slow", "#4 method=scm_fast"]
    assert titles == ["Sweep tiny_caches_vs_peers: speedup vs quality"]  # not .../scratch/sweepdoc3
    markdown = paths["md"].read_text()
    assert markdown.startswith("# Sweep tiny_caches_vs_peers\n") and "experiment=" not in markdown.split("| cell |")[1]
    rows = paths["csv"].read_text().splitlines()
    assert rows[0].startswith("name,label,dir,") and "#1 method=dbcache" in rows[2]


def test_a_sweep_without_experiment_is_titled_by_what_it_swept(tmp_path: Path) -> None:
    from dit_engine.report.cells import Cell, sweep_name

    cells = [Cell("0_cache=none,quiet=true", tmp_path, ["cache=none", "quiet=true"], "ok"),
             Cell("1_cache=dbcache,quiet=true", tmp_path, ["cache=dbcache", "quiet=true"], "ok")]
    assert sweep_name(tmp_path / "tmp" / "sweepdoc3", cells) == "over cache"
    assert sweep_name(tmp_path / "outputs" / "sweeps" / "2026-12-02" / "10-00-00", []) == "2026-12-02/10-00-00"
    assert sweep_name(tmp_path / "tmp" / "sweepdoc3", []) == "sweepdoc3"


def test_a_speedup_above_one_over_compute_is_marked_untrusted(tmp_path: Path):
    """What the newcomer saw: fbcache 6.85x at 44.3 % of the compute and scm_static 7.98x at 32.1 %;
    skipping work cannot give more than 1 / compute. A compiled cell may (its work got faster)."""
    sweep = tmp_path / "sweep"
    rows = [  # (cache, compile, latency, compute, psnr, reference latency)
        ("none", "none", 1.0, 1.0, None, 1.0),
        ("fbcache", "none", 0.146, 0.443, 38.0, 1.0),  # 6.85x, bound 2.26x
        ("scm_static", "none", 0.125, 0.321, 36.0, 1.0),  # 7.98x, bound 3.12x
        ("dbcache", "none", 0.5, 0.49, 39.4, 1.0),  # 2.0x, bound 2.04x: fine
        ("none", "regional", 0.5, 1.0, 60.0, 1.0),  # 2.0x from compiling: no bound applies
    ]
    for num, (cache, compile_, latency, compute, psnr, reference) in enumerate(rows):
        overrides = [f"cache={cache}", f"compile={compile_}"]
        choices = {**ACCELERATION_NONE, "cache": cache, "compile": compile_, "report": "quality"}
        make_cell(sweep, num, overrides, metrics(overrides, latency, compute, psnr, reference), choices)
    cells = {c.name.split("_", 1)[1]: c for c in collect_cells(sweep)}
    flagged = {name for name, c in cells.items() if c.untrusted_speedup}
    assert flagged == {"cache=fbcache,compile=none", "cache=scm_static,compile=none"}
    assert "6.85x at 44.3 % of the compute is above the 2.26x" in cells["cache=fbcache,compile=none"].untrusted_speedup
    assert not any(c.pareto for c in cells.values() if c.untrusted_speedup)
    paths = write_sweep_report(sweep)
    table = paths["md"].read_text()
    assert table.count("⚠ above 1/compute, untrusted") == 2 and "**Untrusted speedups (⚠):**" in table
    csv_text = paths["csv"].read_text()
    assert csv_text.splitlines()[0].endswith(",speedup_untrusted")
    assert sum("above the" in line for line in csv_text.splitlines()[1:]) == 2


def test_the_page_draws_strips_for_cells_run_before_strips_existed(tmp_path: Path):
    """summary.html: the plot, and a compute strip drawn from metrics.json for cells without one
    (each cell's run writes compute_strip.png now); flags shown in the page too."""
    from PIL import Image

    from dit_engine.testing.pages import assert_page_images_load

    sweep = tmp_path / "sweep"
    for num, (cache, latency, compute, mask) in enumerate([("none", 1.0, 1.0, None), ("fbcache", 0.146, 0.443, "1101000100"),
                                                            ("dbcache", 0.5, 0.49, "1100100101")]):
        data = metrics([f"cache={cache}"], latency, compute, 38.0 if mask else None, 1.0)
        if mask:
            data["compute"]["transforms"] = {f"cache.{cache}": {"branches": {"transformer/cfg0": {"masks": [mask, mask]}}}}
        make_cell(sweep, num, [f"cache={cache}"], data, {**ACCELERATION_NONE, "cache": cache})
    Image.new("RGB", (8, 8)).save(sweep / "2_cache=dbcache" / "contact_sheet.png")
    page = write_sweep_report(sweep)["html"]
    assert_page_images_load(page, expected=1 + 1 + 2)  # the plot, one contact sheet, two strips
    assert sorted(p.name for p in (sweep / ".strips").iterdir()) == ["1_cache=fbcache.png", "2_cache=dbcache.png"]
    text = page.read_text()
    assert "untrusted: 6.85x at 44.3 % of the compute" in text and text.count("⚠") == 1
