"""What a parallel run adds to metrics.json: every rank's latency and time in collectives."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist


def per_rank_metrics(stats: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """Gather this rank's numbers from every rank (a collective: every rank calls it)."""
    mine = {
        "rank": stats["rank"],
        "latency_total_s": latency.get("total_s"),
        "collective_s": stats["collective_s"],
        "collective_calls": stats["collective_calls"],
        "bytes_sent": stats["bytes_sent"],
    }
    everyone = [mine]
    if dist.is_initialized() and stats["world_size"] > 1:
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
    return {"world_size": stats["world_size"], "degrees": stats["degrees"], "ranks": everyone}
