"""Joining a torchrun launch: under torchrun every rank runs this CLI; rank 0 writes the run
directory, the others run into a scratch folder that is removed at the end."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from dit_engine.console import fail
from dit_engine.errors import DitEngineError


def join_torchrun(args: argparse.Namespace) -> str | None:
    """Under torchrun, send a rank other than 0 into a scratch folder (its overrides added to
    ``args.overrides``) and return that folder; None for rank 0 and outside torchrun. Sweeps are
    refused there: each sweep cell starts its own ranks when run without torchrun."""
    world = os.environ.get("WORLD_SIZE")  # parallel.mesh.launched_world, read without importing torch
    if not (world and world.isdigit()):
        return None
    # Imported here: parallel.mesh imports torch, which --help and shell completion do without.
    from dit_engine.parallel.mesh import rank_from_env

    if args.multirun:
        fail(DitEngineError("sweeps (-m) do not run under torchrun; run the sweep without torchrun, each cell starts its own ranks"))
    rank = rank_from_env()
    if rank == 0:
        return None
    scratch = tempfile.mkdtemp(prefix=f"dit_engine_rank{rank}_")
    args.overrides += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "quiet=true"]
    return scratch


def leave_torchrun(scratch: str | None) -> None:
    """Close the process group a run under torchrun opened and remove the rank's scratch folder."""
    if "torch.distributed" in sys.modules:  # only a run imports it (never --help or completion)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
