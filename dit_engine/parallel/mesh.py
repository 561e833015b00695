"""The process group and device mesh a parallel plan runs on.

Ranks come from torch's launcher environment (``torchrun``, or the CLI starting its ranks with
:mod:`.launch`, which sets the same variables): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``PORT``. When the caller has initialised the default process group already, it is
used as it is.

The mesh has four named dimensions, outermost first: ``cfg``, ``ring``, ``ulysses``, ``tp``. The
sequence is split over the flattened ``ring`` x ``ulysses`` ranks (ring-major, so each Ulysses
group holds one contiguous stretch of the sequence and Ring passes those stretches around).
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from dit_engine.compat import flatten_mesh
from dit_engine.errors import DitEngineError
from dit_engine.parallel.collectives import CollectiveStats, SequenceGroup
from dit_engine.parallel_dims import ParallelDims

MESH_DIMS = ("cfg", "ring", "ulysses", "tp")


def launched_world() -> int | None:
    """``WORLD_SIZE`` from torch's launcher, or None outside one."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value and value.isdigit() else None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_from_env() -> int:
    """This process's global rank under torch's launcher (0 outside one)."""
    return int(os.environ.get("RANK", "0"))


def bind_local_device(device_name: str) -> None:
    """Under a launcher on a CUDA machine, make ``cuda`` mean this rank's GPU (``LOCAL_RANK``)
    before anything is loaded, so each rank places its pipeline on its own GPU."""
    if launched_world() is not None and device_name in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(local_rank())


def ensure_process_group(device: torch.device, backend: str | None, timeout_s: float) -> None:
    """Join the default process group from the launcher's environment unless one exists."""
    if dist.is_initialized():
        return
    if launched_world() is None:
        raise DitEngineError(
            "a parallel plan needs its ranks: run under torchrun (torchrun --nproc-per-node N your_script.py), "
            "or use the CLI, which starts them itself"
        )
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    # A process group still alive at interpreter exit aborts the process (gloo's threads): the
    # group dit_engine created is destroyed at exit, unless the caller destroyed it already.
    atexit.register(_destroy_if_alive)


def _destroy_if_alive() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class ParallelMesh:
    """The groups of one plan: sequence (ring x ulysses), ulysses, ring, cfg, tp."""

    def __init__(self, degrees: ParallelDims, device: torch.device):
        from torch.distributed.device_mesh import init_device_mesh

        self.degrees = degrees
        self.stats = CollectiveStats()
        self.device = device
        if not dist.is_initialized():  # degree 1 without a launcher: every group is this process
            self.mesh = None
            self.rank, self.world = 0, 1
            self.sequence = self.ulysses = self.ring = self.cfg = self.cfg_sequence = SequenceGroup(None, self.stats)
            self.tp_mesh = None
            return
        if dist.get_world_size() != degrees.world:
            raise DitEngineError(
                f"the parallel degrees multiply to {degrees.world} ranks ({degrees.describe()}) but the process group has "
                f"{dist.get_world_size()}; start {degrees.world} ranks or change the degrees"
            )
        shape = (degrees.cfg, degrees.ring, degrees.ulysses, degrees.tp)
        self.mesh = init_device_mesh(device.type, shape, mesh_dim_names=MESH_DIMS)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.ulysses = SequenceGroup(self.mesh.get_group("ulysses"), self.stats)
        self.ring = SequenceGroup(self.mesh.get_group("ring"), self.stats)
        self.cfg = SequenceGroup(self.mesh.get_group("cfg"), self.stats)
        self.sequence = SequenceGroup(flatten_mesh(self.mesh["ring", "ulysses"], "sequence").get_group(), self.stats)
        # the ranks that hold one whole batch once CFG parallel splits it (statistics over the batch)
        self.cfg_sequence = (SequenceGroup(flatten_mesh(self.mesh["cfg", "ring", "ulysses"], "cfg_sequence").get_group(), self.stats)
                             if degrees.cfg > 1 and degrees.sequence > 1 else self.cfg)
        self.tp_mesh = self.mesh["tp"]

    def forget_lengths(self) -> None:
        """A transformer call starts: the chunk lengths every group memoized may have changed."""
        for group in {id(g): g for g in (self.sequence, self.ulysses, self.ring, self.cfg)}.values():
            group.forget_lengths()
