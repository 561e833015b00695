"""The adapter contract's data: block call patterns read and rebuild every stream layout."""

from __future__ import annotations

import pytest
import torch

from dit_engine.adapter import DUAL_STREAM_ENCODER_FIRST, BlockPattern

H, E = torch.zeros(1), torch.ones(1)


@pytest.mark.parametrize("args,kwargs", [((), {"hidden_states": H, "encoder_hidden_states": E}), ((H, E), {}), ((H,), {"encoder_hidden_states": E})])
def test_inputs_by_keyword_or_position(args, kwargs):
    hidden, encoder = DUAL_STREAM_ENCODER_FIRST.read_inputs(args, kwargs)
    assert hidden is H and encoder is E


@pytest.mark.parametrize("returns", [("encoder", "hidden"), ("hidden", "encoder")])
def test_two_stream_outputs_round_trip(returns):
    pattern = BlockPattern(name="p", returns=returns)
    output = pattern.make_output(H, E)
    assert pattern.read_outputs(output) == (H, E)
    assert output[returns.index("hidden")] is H


def test_single_tensor_blocks():
    pattern = BlockPattern(name="wan", returns=("hidden",))
    assert pattern.make_output(H, None) is H
    assert pattern.read_outputs(H) == (H, None)
    single = BlockPattern(name="dit", encoder=None, returns=("hidden",))
    assert single.read_inputs((H, E), {}) == (H, None)
