"""Engine-owned step state: requests, steps and CFG branches without any pipeline help."""

from __future__ import annotations

from dit_engine.steps import StepState


def test_branch_is_the_call_index_within_a_step():
    state = StepState()
    state.start_request(num_steps=2)
    branches = []
    for _ in range(2):
        for _ in range(2):  # cond, uncond
            state.begin_call("transformer")
            branches.append(state.branch)
        state.end_step()
    assert branches == [0, 1, 0, 1]
    assert state.calls_total == {"transformer": 4} and len(state.step_times) == 2


def test_each_transformer_counts_its_own_branches():
    state = StepState()
    state.start_request(num_steps=1)
    state.begin_call("transformer")
    state.begin_call("transformer_2")
    assert (state.transformer, state.branch) == ("transformer_2", 0)


def test_listeners_run_at_every_request_and_calls_outside_a_pipeline_are_requests():
    state = StepState()
    starts = []
    state.on_request(lambda: starts.append(state.num_steps))
    state.start_request(num_steps=28)
    state.begin_call("transformer")
    assert starts == [28]
    outside = StepState()
    outside.on_request(lambda: starts.append("outside"))
    outside.begin_call("transformer")
    outside.begin_call("transformer")
    assert starts == [28, "outside", "outside"] and outside.branch == 0


def test_reset_stats_keeps_the_request():
    state = StepState()
    state.start_request(num_steps=3)
    state.begin_call("transformer")
    state.end_step()
    state.reset_stats()
    assert state.calls_total == {} and state.step_times == [] and state.request == 1
