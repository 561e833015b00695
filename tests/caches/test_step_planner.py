"""Planned step schedules: the planner's search, the schedule.json artifact and its signature,
and ``cache.schedule`` on the embedded model and tiny FLUX (refusals included)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import dit_engine
from conftest import psnr
from dit_engine.caches.step_planner import Planner, ScheduleMismatchError, computes_for, step_weights
from dit_engine.calibrators.taylorseer import TaylorSeerForecaster
from dit_engine.errors import PlanError
from dit_engine.session import Session
from dit_engine.testing import tiny_flux_call_kwargs
from dit_engine.testing.cli import refusal, run_cli
from test_dbcache import run_tiny
from test_forecasters import run_with

STEPS = 12


# -- the search, on synthetic trajectories -------------------------------------------------------


def kinked(steps: int, kink: int) -> torch.Tensor:
    """A trajectory that is a line up to ``kink`` and another line after it: ``(steps, 1, 2)``."""
    values = [[s, 2.0 * s] if s <= kink else [kink + 3.0 * (s - kink), 2.0 * kink - (s - kink)] for s in range(steps)]
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def test_dynamic_programme_finds_the_cheapest_sum_of_gap_costs():
    torch.manual_seed(0)
    trajectory = torch.randn(9, 2, 16, dtype=torch.float64).cumsum(0)
    planner = Planner(trajectory, step_weights(None, 9), lambda: TaylorSeerForecaster(1, 2))
    cost = planner.gap_costs()

    def total(steps):
        pairs = [(9, steps[0])] + list(zip(steps, steps[1:]))
        return sum(cost[a, b, c] for (a, b), c in zip(pairs, list(steps[1:]) + [9]))

    for computes in (2, 3, 4):
        brute = min(((0, *rest) for rest in itertools.combinations(range(1, 9), computes - 1)), key=total)
        planned = planner.dynamic_programme(computes, cost)
        assert len(planned) == computes and planned[0] == 0
        assert total(planned) == pytest.approx(total(brute))


def test_a_plan_computes_where_the_trajectory_bends():
    # linear forecasting is exact on each line: computing two steps on each side of the kink
    # leaves no error, wherever the layout rule would have put them
    planner = Planner(kinked(16, kink=9), step_weights(None, 16), lambda: TaylorSeerForecaster(1, 2))
    plan = planner.plan(4, planner.gap_costs())
    assert plan["objective"] == "open_loop" and plan["error"] == pytest.approx(0, abs=1e-20)
    steps = plan["steps"]
    assert steps[0] == 0 and sum(s >= 9 for s in steps) == 2  # two on the second line (9 is on both)
    assert plan["layout_errors"]["steps"] > 1e-4


def test_budgets_count_computes_like_the_layout_rule():
    assert [computes_for(b, 28) for b in (0.11, 0.18, 0.25, 1.0, 0.001)] == [3, 5, 7, 28, 1]


def test_step_weights_are_the_sigma_decrements():
    assert list(step_weights([1.0, 0.75, 0.25], 3)) == pytest.approx([0.25, 0.5, 0.25])
    assert list(step_weights(None, 4)) == pytest.approx([0.25] * 4)


# -- planning runs and the artifact ----------------------------------------------------------


def plan_file(pipe, run, tmp_path, *overrides, name="schedule.json") -> tuple[str, dict]:
    """A schedule.json for ``pipe`` from one run under cache=plan_steps; its outputs must be the plain ones."""
    handle = dit_engine.apply(pipe, "cache=plan_steps", *overrides)
    try:
        outputs = run()
        data = next(t for t in handle.transforms if t.name == "cache.plan_steps").artifacts()["schedule.json"]
    finally:
        handle.remove()
    file = tmp_path / name
    file.write_text(json.dumps(data))
    return str(file), {"outputs": outputs, "data": data}


def tiny_run(pipe, seed=0):
    return lambda: run_tiny(pipe, prompts=["two", "five"], seed=seed)


@pytest.fixture(scope="module")
def tiny_schedule(tiny_pipe, tmp_path_factory):
    """Planned for spectrum on seeds other than the ones the tests compare on."""
    path, made = plan_file(tiny_pipe, tiny_run(tiny_pipe, seed=100), tmp_path_factory.mktemp("plan"),
                           "calibrator=spectrum", "cache.budgets=[0.11,0.18,1.0]", "cache.evaluations=20")
    return path, made


def test_planning_runs_uncached_and_writes_a_signed_schedule(tiny_pipe, tiny_schedule):
    path, made = tiny_schedule
    assert torch.equal(made["outputs"], tiny_run(tiny_pipe, seed=100)())  # every step computes
    data = made["data"]
    signature = data["signature"]
    assert signature["model"] == "tiny" and signature["steps"] == 28 and signature["calibrator"] == "spectrum"
    assert len(signature["sigmas"]) == 28 and signature["resolution"] and ":" in signature["scheduler"]
    assert data["recorded"]["replayed_requests"] == 1 and data["objective"].startswith("closed_loop")
    by_computes = {s["computes"]: s for s in data["schedules"]}
    assert set(by_computes) == {3, 5, 28}
    for computes, schedule in by_computes.items():
        assert schedule["steps"][0] == 0 and len(schedule["steps"]) == computes
        assert schedule["mask"].count("1") == computes and schedule["error"] <= min(schedule["layout_errors"].values()) + 1e-12
        if computes < 28:
            assert schedule["objective"] == "closed_loop" and schedule["evaluations"] <= 20 + 3


def test_a_schedule_drives_the_steps_and_is_reported(tiny_pipe, tiny_schedule):
    path, made = tiny_schedule
    run = tiny_run(tiny_pipe)
    reference = run()
    planned = {s["computes"]: s for s in made["data"]["schedules"]}[5]
    output, summary = run_with(tiny_pipe, run, "cache=scm_static", "calibrator=spectrum", "cache.budget=0.18", f"cache.schedule={path}")
    stats = summary["transforms"]["cache.scm"]
    assert stats["branches"]["transformer/cfg0"]["masks"] == [planned["mask"]]
    assert stats["schedule"]["steps"] == planned["steps"] and stats["schedule"]["signature"]["model"] == "tiny"
    assert psnr(reference, output) > 33  # 5 of 28 steps computed
    assert torch.equal(run(), reference)  # remove() restores the plain pipeline


def test_a_schedule_of_every_step_is_identical_to_no_cache(tiny_pipe, tiny_schedule):
    path, _ = tiny_schedule
    run = tiny_run(tiny_pipe)
    reference = run()
    output, _ = run_with(tiny_pipe, run, "cache=scm_static", "calibrator=spectrum", "cache.budget=1", f"cache.schedule={path}")
    assert torch.equal(output, reference)


def edited(path: str, tmp_path, **changes) -> str:
    data = json.loads(open(path).read())
    data["signature"].update(changes)
    file = tmp_path / "edited.json"
    file.write_text(json.dumps(data))
    return str(file)


@pytest.mark.parametrize("field,value", [
    ("transformer", "0000000000000000"),
    ("scheduler", "FlowMatchEulerDiscreteScheduler:0000"),
    ("resolution", [9, 9]),
    ("sigmas", [round(1 - i / 30, 6) for i in range(28)]),
])
def test_a_request_that_differs_from_the_signature_is_refused_naming_the_field(tiny_pipe, tiny_schedule, tmp_path, field, value):
    path = edited(tiny_schedule[0], tmp_path, **{field: value})
    overrides = ("cache=scm_static", "calibrator=spectrum", "cache.budget=0.18", f"cache.schedule={path}")
    with pytest.raises(ScheduleMismatchError) as info:
        run_with(tiny_pipe, tiny_run(tiny_pipe), *overrides)
    message = str(info.value)
    assert f"was planned for {field}=" in message and "\n" not in message and "cache=plan_steps" in message


def test_another_step_count_is_refused_before_anything_runs(tiny_pipe, tiny_schedule):
    path, _ = tiny_schedule
    calls = []
    hook = tiny_pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    handle = dit_engine.apply(tiny_pipe, "cache=scm_static", "calibrator=spectrum", "cache.budget=0.18", f"cache.schedule={path}")
    try:
        with pytest.raises(ScheduleMismatchError, match="was planned for steps=28, this request has steps=12"):
            tiny_pipe(prompt=["two"], num_inference_steps=STEPS, output_type="pt")
    finally:
        handle.remove()
        hook.remove()
    assert calls == []


@pytest.mark.parametrize("overrides,expected", [
    (["cache.schedule=/no/such/schedule.json"], "cache.schedule=/no/such/schedule.json does not exist; plan one with"),
    (["cache.budget=0.25"], "has no plan for 7 of 28 steps (a budget of 0.25); it planned 3 of 28 (cache.budget=0.107)"),
    (["cache.budget=1.5"], "cache.budget=1.5 must be in (0, 1]"),
    (["cache.budget=0"], "cache.budget=0.0 must be in (0, 1]"),
    (["cache.mask=1010"], "cache.schedule and cache.mask both say which steps compute"),
    (["cache.policy=adaptive"], "cache.policy=adaptive places its computes itself"),
    (["calibrator=taylorseer"], "was planned for calibrator=spectrum, this run has calibrator=taylorseer"),
])
def test_bad_schedules_are_one_line_plan_errors(tiny_schedule, overrides, expected):
    path = tiny_schedule[0]
    base = ["cache=scm_static", "calibrator=spectrum", "cache.budget=0.11", f"cache.schedule={path}"]
    with pytest.raises(PlanError) as info:
        Session.from_overrides([*base, *overrides]).prepare()
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_corrupt_and_foreign_files_are_refused(tmp_path, tiny_schedule):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    foreign = edited(tiny_schedule[0], tmp_path, model="flux")
    for path, expected in ((corrupt, "is not a schedule.json"), (other, "is not a dit_engine schedule.json"),
                           (foreign, "was planned for model=flux, this run has model=tiny")):
        with pytest.raises(PlanError, match=expected.replace("(", r"\(")):
            Session.from_overrides(["cache=scm_static", "calibrator=spectrum", "cache.budget=0.11", f"cache.schedule={path}"]).prepare()


@pytest.mark.parametrize("overrides,expected", [
    (["cache.budgets=[]"], "cache.budgets is empty"),
    (["cache.budgets=[0.2,1.5]"], "cache.budgets holds 1.5: each budget must be in (0, 1]"),
    (["cache.evaluations=0"], "cache.evaluations=0 must be 1 or more"),
    (["cache.replay_requests=-1"], "cache.replay_requests=-1 must be 0"),
])
def test_bad_planning_settings_are_one_line_plan_errors(overrides, expected):
    with pytest.raises(PlanError) as info:
        Session.from_overrides(["cache=plan_steps", *overrides]).prepare()
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_planning_on_tiny_flux_beats_the_layout_rule(tiny_flux, tmp_path):
    def run(seed=0):
        kwargs = tiny_flux_call_kwargs(prompt=["a red fox", "a blue bird"], num_inference_steps=28)
        kwargs["generator"] = torch.Generator().manual_seed(seed)
        return tiny_flux(**kwargs).images

    path, made = plan_file(tiny_flux, lambda: run(1000), tmp_path, "calibrator=spectrum", "cache.budgets=[0.11]",
                           "cache.evaluations=30")
    reference = run()
    results = {}
    for label, extra in (("layout", []), ("planned", [f"cache.schedule={path}"])):
        output, _ = run_with(tiny_flux, run, "cache=scm_static", "calibrator=spectrum", "cache.budget=0.11", *extra)
        results[label] = psnr(reference, output)
    # measured: 47.3 dB with the layout rule's 0, 12, 24; 50.9 dB planned (other seeds than planned on)
    assert results["planned"] > results["layout"] + 1.5


def test_the_cli_writes_and_uses_a_schedule(tmp_path):
    plan_dir, use_dir = tmp_path / "plan", tmp_path / "use"
    code, stderr = run_cli("cache=plan_steps", "calibrator=spectrum", "workload=one_prompt", "workload.seed=7",
                           "cache.budgets=[0.18]", "cache.evaluations=8", f"hydra.run.dir={plan_dir}")
    assert code == 0, stderr
    schedule = plan_dir / "schedule.json"
    assert json.loads(schedule.read_text())["signature"]["steps"] == 28
    code, stderr = run_cli("cache=scm_static", "calibrator=spectrum", "cache.budget=0.18", f"cache.schedule={schedule}",
                           "workload=one_prompt", f"hydra.run.dir={use_dir}")
    assert code == 0, stderr
    metrics = json.loads((use_dir / "metrics.json").read_text())
    assert metrics["cache"]["schedule"]["computes"] == 5 and metrics["cache"]["schedule"]["file"] == str(schedule)
    line = refusal("cache=scm_static", "calibrator=spectrum", "cache.budget=0.18", f"cache.schedule={schedule}",
                   "workload=one_prompt", "workload.num_inference_steps=20", f"hydra.run.dir={tmp_path / 'refused'}")
    assert "was planned for steps=28, this request has steps=20" in line
    assert not (tmp_path / "refused" / "metrics.json").exists()


def test_two_cfg_branches_plan_open_loop_and_say_why(tmp_path):
    from dit_engine.testing import build_tiny_qwen_image_pipeline, tiny_qwen_image_call_kwargs

    qwen = build_tiny_qwen_image_pipeline(seed=0)
    qwen.set_progress_bar_config(disable=True)

    def run():
        return qwen(**tiny_qwen_image_call_kwargs(num_inference_steps=8)).images  # true CFG: two calls per step

    path, made = plan_file(qwen, run, tmp_path, "calibrator=spectrum", "cache.budgets=[0.25,0.5]")
    data = made["data"]
    assert data["objective"].startswith("open_loop") and "CFG branch" in data["recorded"]["open_loop_because"]
    assert data["recorded"]["samples"] == 2  # both branches' trajectories are planned on
    reference = run()
    output, summary = run_with(qwen, run, "cache=scm_static", "calibrator=spectrum", "cache.budget=0.5", f"cache.schedule={path}")
    stats = summary["transforms"]["cache.scm"]
    planned = {s["computes"]: s for s in data["schedules"]}[4]
    assert stats["branches"]["transformer/cfg0"]["masks"] == [planned["mask"]] == stats["branches"]["transformer/cfg1"]["masks"]
    assert torch.isfinite(output).all() and output.shape == reference.shape


def test_a_served_request_unlike_the_schedule_is_a_400_and_the_server_keeps_serving(tiny_schedule):
    from fastapi.testclient import TestClient

    from dit_engine.serve.app import create_app
    from dit_engine.serve.engine import ServingEngine

    session = Session.from_overrides(["cache=scm_static", "calibrator=spectrum", "cache.budget=0.11",
                                      f"cache.schedule={tiny_schedule[0]}", "serve.batch_wait_ms=0"])
    engine = ServingEngine(session.prepare())
    client = TestClient(create_app(engine))
    try:
        refused = client.post("/v1/images/generations", json={"prompt": "seven", "num_inference_steps": 20})
        assert refused.status_code == 400
        assert "was planned for steps=28, this request has steps=20" in refused.json()["error"]["message"]
        assert client.post("/v1/images/generations", json={"prompt": "seven"}).status_code == 200
    finally:
        engine.close()
