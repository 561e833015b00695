"""A rank program for the failure test: rank 1 raises while rank 0 waits in a collective."""

import sys
import time

import torch
import torch.distributed as dist

from dit_engine.launch.rank import record_failure

dist.init_process_group("gloo")
try:
    if dist.get_rank() == 1:
        time.sleep(1)
        raise RuntimeError("boom on rank 1")
    dist.all_reduce(torch.ones(1))  # rank 0 blocks here: only the launcher can end it
    time.sleep(600)
except RuntimeError as err:
    record_failure(err, bad_input=False)
    sys.exit(1)
