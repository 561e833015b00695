"""``parallel=auto``: the degrees chosen from the world size, the model's heads and the workload's
CFG, by what each mode sends (:mod:`.volume`, docs/parallel.md).

The rule, cheapest traffic first:

1. **CFG parallel** (degree 2) when the workload has two CFG branches and the world size is even:
   the ranks exchange only the transformer's output.
2. The rest of the ranks split the sequence: **Ulysses** takes the largest degree that divides the
   attention heads (per layer it sends ``4 (U - 1) / U^2`` of the activations, against Ring's
   ``2 (R - 1) / R``: less for any degree above 2, the same at 2), **Ring** the remaining factor.
   On several nodes (``parallel.nodes``, or torchrun's ``--nnodes``) Ulysses stays inside a node
   (its degree divides the ranks per node): its all-to-all is the chatty one; Ring crosses nodes.
3. Tensor parallel is never chosen: its all-reduces send the whole activation twice per block.

Torch-free: the plan compiler calls it with config and model facts only.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dit_engine.parallel_dims import DEGREE_KEYS

if TYPE_CHECKING:  # the adapter module imports torch; this one stays free of it
    from dit_engine.adapter import Adapter, ModelInfo


def world_size(config: Any) -> int | None:
    """The ranks to lay out: torchrun's ``WORLD_SIZE``, else ``parallel.world_size``."""
    launched = os.environ.get("WORLD_SIZE")
    if launched and launched.isdigit():
        return int(launched)
    return config.world_size


def node_count(config: Any) -> int:
    """The machines the ranks span: torchrun's node count (``GROUP_WORLD_SIZE``) when launched,
    else ``parallel.nodes`` (1 when unset)."""
    launched = os.environ.get("GROUP_WORLD_SIZE")
    if launched and launched.isdigit() and os.environ.get("WORLD_SIZE"):
        return int(launched)
    return config.nodes or 1


def nodes_problem(config: Any, world: int) -> str | None:
    """Why the node count cannot hold ``world`` ranks (one line), or None."""
    nodes = node_count(config)
    if nodes < 1:
        return f"parallel.nodes={nodes}: use 1 or more (the machines the ranks span)"
    launched = os.environ.get("GROUP_WORLD_SIZE")
    if config.nodes is not None and launched and os.environ.get("WORLD_SIZE") and launched.isdigit() and int(launched) != config.nodes:
        return (f"parallel.nodes={config.nodes} but torchrun started {launched} node(s); drop parallel.nodes "
                "(under torchrun it is torchrun's --nnodes) or start that many")
    if world % nodes:
        return (f"{nodes} nodes do not divide the {world} ranks: every node runs the same number of ranks; "
                f"use a node count that divides {world}, or {nodes * max(1, round(world / nodes))} ranks")
    return None


def cfg_branches(adapter: Adapter, run_config: Any) -> int:
    """2 when the run's workload computes two CFG branches per step (separate calls, or cond and
    uncond batched in one call), else 1."""
    workload = run_config.get("workload") if run_config is not None else None
    call_kwargs = dict(workload.get("call_kwargs") or {}) if workload is not None else {}
    guidance = workload.get("guidance_scale") if workload is not None else None
    if guidance is None:
        guidance = adapter.workload_defaults().guidance_scale
    calls = adapter.cfg_calls({**call_kwargs, "guidance_scale": guidance})
    if calls == 2:
        return 2
    return 2 if adapter.cfg_mode == "batched" and guidance > 1 else 1


def choose_layout(config: Any, adapter: Adapter, model_info: ModelInfo, run_config: Any) -> tuple[Any, list[str]]:
    """``config`` (a ``parallel=auto`` one) with its degrees chosen and ``auto_reason`` saying why;
    or the problems that leave no layout, each a one-line fix."""
    set_by_hand = [f"parallel.{key}={getattr(config, key)}" for key in DEGREE_KEYS if getattr(config, key) != 1]
    if set_by_hand:
        return config, [f"parallel=auto chooses the degrees itself; drop {', '.join(set_by_hand)} (or drop parallel=auto "
                        "and give every degree)"]
    world = world_size(config)
    if world is None or world < 2:
        return config, ["parallel=auto needs 2 or more ranks to lay out: run under torchrun --nproc-per-node N, or set "
                        "parallel.world_size=N (the CLI then starts N ranks itself), or drop parallel="]
    problem = nodes_problem(config, world)
    if problem:
        return config, [problem]
    reasons = []
    cfg = 1
    branches = cfg_branches(adapter, run_config)
    if branches == 2 and world % 2 == 0:
        cfg = 2
        reasons.append("cfg 2: the workload has two CFG branches and CFG parallel exchanges only the output")
    elif branches == 2:
        reasons.append(f"no cfg: {world} ranks do not split into two CFG halves")
    else:
        reasons.append("no cfg: the workload has one CFG branch")
    sequence = world // cfg
    heads = model_info.num_heads or 0
    per_node = world // node_count(config)
    ulysses = max((d for d in range(1, sequence + 1)
                   if sequence % d == 0 and per_node % d == 0 and heads and heads % d == 0), default=1)
    ring = sequence // ulysses
    if sequence > 1:
        inside = f" and the {per_node} ranks of a node" if per_node < world else ""
        reasons.append(f"ulysses {ulysses}: the largest degree of {sequence} dividing the {heads} heads{inside}"
                       + (f"; ring {ring} for the rest" if ring > 1 else ""))
    sent = predicted_bytes_per_step(adapter, model_info, run_config, ulysses, ring, cfg, branches,
                                    fp8=config.comm_dtype == "fp8", head_groups=2 if config.ulysses_overlap else 1)
    if sent is not None:
        reasons.append(f"predicted {sent / 1e9:.3g} GB sent per rank per step (docs/parallel.md's volume model)")
    chosen = replace(config, ulysses_degree=ulysses, ring_degree=ring, cfg_degree=cfg, tp_degree=1,
                     auto_reason="; ".join(reasons))
    return chosen, []


def predicted_bytes_per_step(adapter: Adapter, model_info: ModelInfo, run_config: Any, ulysses: int, ring: int, cfg: int,
                             branches: int, fp8: bool = False, head_groups: int = 1) -> float | None:
    """Bytes one rank sends per denoising step under the layout, by :mod:`.volume`; None where the
    adapter gives no call shape. Each rank runs ``branches / cfg`` of the step's CFG branches
    (batched or separate alike); CFG parallel adds the exchange of one branch's output."""
    from dit_engine.parallel.volume import context_parallel_bytes, output_gather_bytes

    workload = run_config.get("workload") if run_config is not None else None
    height = workload.get("height") if workload is not None else None
    width = workload.get("width") if workload is not None else None
    call = adapter.communication_workload(model_info, height, width)
    if call is None:
        return None
    sent = (branches // cfg) * context_parallel_bytes(call, ulysses, ring, fp8=fp8, head_groups=head_groups)
    if cfg > 1:
        sent += output_gather_bytes(call, cfg)
    return sent
