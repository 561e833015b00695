"""``parallel=auto``: the degrees chosen from the world size, the heads and the workload's CFG,
with the predicted bytes, at plan time (nothing starts)."""

from __future__ import annotations

import pytest

from dit_engine.errors import PlanError
from dit_engine.parallel.volume import FLUX_DEV_1024, context_parallel_bytes, output_gather_bytes
from dit_engine.session import Session

TRUE_CFG = ["+workload.call_kwargs.true_cfg_scale=4", "+workload.call_kwargs.negative_prompt=blurry"]


def layout(*overrides: str):
    step = next(s for s in Session.from_overrides(["model=flux", "parallel=auto", "dry_run=true", *overrides]).prepare().plan.steps
                if s.group == "parallel")
    return step.config


@pytest.mark.parametrize("world, ulysses", [(2, 2), (4, 4), (8, 8)])
def test_flux_dev_is_laid_out_over_ulysses_with_its_predicted_bytes(monkeypatch, world, ulysses):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = layout(f"parallel.world_size={world}")
    assert (config.ulysses_degree, config.ring_degree, config.cfg_degree, config.tp_degree) == (ulysses, 1, 1, 1)
    predicted = context_parallel_bytes(FLUX_DEV_1024, ulysses, 1)
    assert f"predicted {predicted / 1e9:.3g} GB sent per rank per step" in config.auto_reason


def test_two_cfg_branches_go_to_cfg_parallel_first_and_torchruns_world_is_used(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    config = layout(*TRUE_CFG)
    assert (config.ulysses_degree, config.ring_degree, config.cfg_degree) == (4, 1, 2)
    predicted = context_parallel_bytes(FLUX_DEV_1024, 4, 1) + output_gather_bytes(FLUX_DEV_1024, 2)
    assert "cfg 2: the workload has two CFG branches" in config.auto_reason
    assert f"predicted {predicted / 1e9:.3g} GB" in config.auto_reason


def test_ring_takes_what_the_heads_do_not_divide(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = layout("parallel.world_size=5")  # 24 heads: 5 does not divide them
    assert (config.ulysses_degree, config.ring_degree) == (1, 5)
    config = layout("parallel.world_size=6", *TRUE_CFG)  # cfg 2, then 3 divides 24 heads
    assert (config.ulysses_degree, config.ring_degree, config.cfg_degree) == (3, 1, 2)


@pytest.mark.parametrize("overrides, message", [
    ([], "parallel=auto needs 2 or more ranks to lay out"),
    (["parallel.world_size=1"], "parallel=auto needs 2 or more ranks to lay out"),
    (["parallel.world_size=4", "parallel.ulysses_degree=2"], "parallel=auto chooses the degrees itself; drop parallel.ulysses_degree=2"),
])
def test_no_layout_is_one_line(monkeypatch, overrides, message):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(PlanError) as info:
        layout(*overrides)
    assert message in str(info.value) and "\n" not in str(info.value)
