"""CPU threads that fit the machine.

Two torch intra-op threads on two busy cores made one call 24x slower than one thread: OpenMP
threads spin waiting for each other when the scheduler has put one of them aside. So ranks started
on one machine share its cores (``cores // ranks`` intra-op threads each, at least one, never more
threads than cores in total where there are enough cores), and a run that starts on a machine
with more busy threads than cores says so once in its log: its timings will scatter.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_warned = False


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_rank(ranks: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``ranks`` processes sharing ``cores``: ``cores // ranks``, at
    least one (more ranks than cores then oversubscribe, which :func:`warn_if_oversubscribed` says)."""
    return max(1, (cores or usable_cores()) // max(1, ranks))


def rank_environment(env: dict[str, str], ranks: int) -> dict[str, str]:
    """``env`` with ``OMP_NUM_THREADS`` for each of ``ranks`` local ranks: the user's value when it
    is set (said in the log when it oversubscribes the cores), else :func:`threads_per_rank`."""
    cores = usable_cores()
    if "OMP_NUM_THREADS" in env:
        try:
            asked = int(env["OMP_NUM_THREADS"])
        except ValueError:
            asked = 0
        if asked * ranks > cores:
            log.warning("OMP_NUM_THREADS=%s on each of %d ranks is %d threads on %d cores: the ranks will slow each other "
                        "down; unset it to give each rank %d", env["OMP_NUM_THREADS"], ranks, asked * ranks, cores,
                        threads_per_rank(ranks, cores))
        return env
    return {**env, "OMP_NUM_THREADS": str(threads_per_rank(ranks, cores))}


def fit_rank_threads() -> int:
    """In a rank a local launch started: one intra-op thread count from ``OMP_NUM_THREADS`` (torch
    reads it too; set here as well so a library that changed it cannot) and one inter-op thread
    (the ranks' inter-op pools would otherwise add a thread per core each). Returns the count."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS") or threads_per_rank(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # settable only before the first inter-op work
        pass
    return torch.get_num_threads()


def running_threads() -> int | None:
    """Threads running or waiting to run on the machine right now (``procs_running`` in
    ``/proc/stat``, which counts the thread reading it), or None where that file does not exist."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running "):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def warn_if_oversubscribed(own_threads: int) -> str | None:
    """Say once per process, in the log, when the threads already running on the machine plus
    ``own_threads`` (what this run is about to start) exceed the cores. Returns the message."""
    global _warned
    running = running_threads()
    if running is None or _warned:
        return None
    others = max(0, running - 1)  # not counting the thread that asked
    cores = usable_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if others + own_threads <= cores and load <= cores:
        return None
    others = max(others, round(load))  # the last minute's load, where it says more than this instant
    _warned = True
    message = (f"the machine is busier than its cores: {others} other thread(s) running on {cores} core(s) and this run "
               f"starts {own_threads}, so it may run several times slower and its wall-clock timings will scatter; "
               "threads=1 (one torch thread per process) or a quieter machine help (the speedup is timed on CPU time)")
    log.warning(message)
    return message
