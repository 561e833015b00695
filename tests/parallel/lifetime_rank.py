"""A rank program for test_lifetime.py: every rank joins the process group and loops on all-reduces
(as a parallel run's ranks do); the rank named by argv[2], once the group is up, writes its pid
and the time into argv[3] and sends itself argv[1]'s signal (SIGKILL: the out-of-memory killer; SIGSTOP: a
hung rank). The others then fail in their all-reduce, or wait in it, like a run's surviving ranks."""

import os
import signal
import sys
import time

import torch
import torch.distributed as dist

from dit_engine.launch.rank import rank_exit_code


def run() -> None:
    dist.init_process_group("gloo")
    dist.barrier()
    if dist.get_rank() == int(sys.argv[2]):
        with open(sys.argv[3], "w") as stamp:
            stamp.write(f"{os.getpid()} {time.time()}")
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    while True:
        dist.all_reduce(torch.ones(1))
        time.sleep(0.01)


sys.exit(rank_exit_code(run, "lifetime_rank"))
