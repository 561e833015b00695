"""What a parallel run adds to metrics.json: every rank's latency, time in collectives and threads."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

#: what each rank reports, gathered as numbers (a tensor: nothing is unpickled between ranks)
FIELDS = ("rank", "latency_total_s", "collective_s", "collective_calls", "bytes_sent", "torch_threads")
COUNTS = ("rank", "collective_calls", "bytes_sent", "torch_threads")


def per_rank_metrics(stats: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """Gather this rank's numbers from every rank (a collective: every rank calls it)."""
    mine = {
        "rank": stats["rank"],
        "latency_total_s": latency.get("total_s"),
        "collective_s": stats["collective_s"],
        "collective_calls": stats["collective_calls"],
        "bytes_sent": stats["bytes_sent"],
        "torch_threads": torch.get_num_threads(),  # intra-op threads: cores / ranks on a CPU launch
    }
    everyone = [mine]
    if dist.is_initialized() and stats["world_size"] > 1:
        # NCCL gathers CUDA tensors only (as torch's own object collectives do: on this rank's GPU)
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        row = torch.tensor([math.nan if mine[key] is None else float(mine[key]) for key in FIELDS], dtype=torch.float64,
                           device=device)
        rows = [torch.empty_like(row) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, row)
        everyone = [{key: _number(key, value) for key, value in zip(FIELDS, r.cpu().tolist())} for r in rows]
    return {"world_size": stats["world_size"], "degrees": stats["degrees"], "ranks": everyone}


def _number(key: str, value: float) -> float | int | None:
    if math.isnan(value):
        return None
    return int(value) if key in COUNTS else value
