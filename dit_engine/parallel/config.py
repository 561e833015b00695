"""``parallel=``'s config dataclass (the schema).

Torch-free: Hydra composes (and ``--help``, shell completion and the config checks read) these
schemas without importing torch; the transforms that use them import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

@dataclass
class ParallelConfig:
    """``parallel=``: how one request is spread over ranks (presets ``ulysses2``, ``ring2``,
    ``usp2x2``, ``cfg2``, ``tp2`` ...; the degrees compose freely and multiply to the world size).

    Attributes:
        name: transform implementation (``torch_distributed``).
        ulysses_degree: Ulysses sequence parallelism: ranks that all-to-all the heads.
        ring_degree: Ring attention: ranks that pass key/value chunks around a ring.
        cfg_degree: 2 puts the conditional and unconditional CFG branches on different ranks.
        tp_degree: tensor parallelism of the transformer's linear layers (the adapter's TP plan).
        any_shape: sequence lengths and head counts the degrees do not divide are split unevenly
            (false: such shapes are refused at plan time, where they can be known).
        backend: torch.distributed backend; null picks nccl on CUDA, gloo on CPU (nccl needs CUDA).
        timeout_s: how long a collective may wait for the other ranks before failing (1 to 86400 s).
        heartbeat_timeout_s: ranks the CLI or the server starts itself: a rank silent this long
            (stopped, or its machine stalled) ends the launch, whatever ``timeout_s`` says (5 to 3600 s).
        allow_large_world: plan more than 64 ranks without torchrun (a local launch, or a dry run
            of a multi-node plan); under torchrun the world is torchrun's.
        auto: choose the degrees (``parallel=auto``, :mod:`dit_engine.parallel.auto`): from
            ``world_size`` (torchrun's when launched), the model's heads and the workload's CFG.
        world_size: the ranks ``auto`` lays out when not under torchrun (the CLI starts them).
        auto_reason: why ``auto`` chose its degrees (set by the plan; shown by ``dry_run`` and
            recorded in ``metrics.json``).
        comm_dtype: null sends the Ulysses all-to-all in the model's dtype; ``fp8`` sends it as
            float8 (e4m3) with one scale per tensor: a quarter of fp32's bytes, half of bf16's.
            ``metrics.json``'s parallel section reports the PSNR against the unquantized exchange.
        ulysses_overlap: pipeline the Ulysses all-to-all over head sub-groups, the exchange of
            one sub-group in flight while the previous one attends (same output).
        nodes: the machines the ranks span (null: torchrun's ``--nnodes``, else 1); must divide
            the world size; ``parallel=auto`` keeps Ulysses inside a node.
        vae: split the VAE decode (and encode) over every rank by rows (:mod:`.vae`).
        text_encoder: split the prompts of every text-encoder call over the ranks (:mod:`.text_encoder`).
    """

    name: str = "torch_distributed"
    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_degree: int = 1
    tp_degree: int = 1
    any_shape: bool = True
    backend: Optional[str] = None
    timeout_s: float = 600.0
    heartbeat_timeout_s: float = 60.0
    allow_large_world: bool = False
    auto: bool = False
    world_size: Optional[int] = None
    auto_reason: Optional[str] = None
    comm_dtype: Optional[str] = None
    ulysses_overlap: bool = False
    nodes: Optional[int] = None
    vae: bool = False
    text_encoder: bool = False
