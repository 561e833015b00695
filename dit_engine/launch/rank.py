"""How every rank that :mod:`dit_engine.launch.local` starts begins and ends:
``python -m dit_engine.launch.rank TARGET ARGS...`` runs TARGET (a module, or a ``.py`` path) as
``__main__``, as ``python -m TARGET ARGS...`` would, after five safeguards:

* **It dies with its launcher**, however the launcher ends (SIGKILL, the out-of-memory killer):
  the kernel sends this process SIGKILL when the launcher does (``prctl(PR_SET_PDEATHSIG)``; the
  launcher starts and waits for its ranks in one thread, which lives as long as the launch). A
  launcher that ended before that request took effect is seen at once (this process's parent
  changed). Where prctl does not exist, the heartbeat's failed write (below) ends the rank.
* **It shows it is alive**: a daemon thread writes a byte to a pipe the launcher reads every
  ``DIT_ENGINE_HEARTBEAT_INTERVAL_S``. A rank that stops (SIGSTOP, a machine swapping to a halt)
  falls silent and the launcher ends the launch (``parallel.heartbeat_timeout_s``).
* **Its threads fit the machine**: ``cores / ranks`` intra-op threads (``OMP_NUM_THREADS``, set
  by the launcher) and one inter-op thread (:func:`~dit_engine.threads.fit_rank_threads`).
* **It is as quiet as the CLI**: library noise the CLI drops (:func:`~dit_engine.console.quiet_known_noise`)
  is dropped before TARGET imports anything.
* **SIGTERM is a clean stop**: the launcher stops its ranks with SIGTERM, which raises
  KeyboardInterrupt in the main thread (SIGINT too), so ``finally`` blocks run (staged outputs
  discarded) and the rank exits quietly with 128 + the signal's number (143 for SIGTERM).

The ranks run in their own session, so a terminal's Ctrl-C reaches only the launcher, which then
stops them. A rank ends through :func:`rank_exit_code`, which records a failure (:func:`record_failure`)
for the launcher to name.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import runpy
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dit_engine.console import quiet_known_noise
from dit_engine.errors import DitEngineError
from dit_engine.threads import fit_rank_threads

ERRORS_ENV = "DIT_ENGINE_RANK_ERRORS"
LAUNCHER_PID_ENV = "DIT_ENGINE_LAUNCHER_PID"
HEARTBEAT_FD_ENV = "DIT_ENGINE_HEARTBEAT_FD"
HEARTBEAT_INTERVAL_ENV = "DIT_ENGINE_HEARTBEAT_INTERVAL_S"

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_launcher(launcher_pid: int) -> None:
    """Ask the kernel for SIGKILL when the launcher ends; end now if it has ended already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != launcher_pid:  # the launcher ended before the request above took effect
        os._exit(1)


def _beat(fd: int, interval: float) -> None:
    while True:
        try:
            os.write(fd, b".")
        except OSError:  # the launcher closed its end: it is gone, and so is this launch
            os._exit(1)
        time.sleep(interval)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(signum)


def record_failure(err: BaseException, bad_input: bool) -> None:
    """Record this rank's failure for the launching process (no-op outside a local launch)."""
    folder = os.environ.get(ERRORS_ENV)
    if not folder:
        return
    rank = int(os.environ.get("RANK", "0"))
    text = str(err).strip()
    reason = text.splitlines()[0] if text else type(err).__name__
    if not bad_input:
        reason = f"{type(err).__name__}: {reason}"
    record = {"rank": rank, "reason": reason, "bad_input": bad_input, "time": time.time()}
    Path(folder, f"rank{rank}.json").write_text(json.dumps(record))


def rank_exit_code(run: Callable[[], None], program: str) -> int:
    """Run this rank's part; its exit code: 0, 2 for bad input (one line on stderr), 1 for anything
    else (traceback in the log). Both failures are recorded for the launching process."""
    rank = int(os.environ.get("RANK", "0"))
    try:
        run()
        return 0
    except DitEngineError as err:
        record_failure(err, bad_input=True)
        print(f"{program}: rank {rank}: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        record_failure(err, bad_input=False)
        logging.getLogger("dit_engine").exception("rank %d failed", rank)
        return 1


def main(argv: list[str]) -> int:
    die_with_launcher(int(os.environ[LAUNCHER_PID_ENV]))
    heartbeat = threading.Thread(target=_beat, name="dit_engine-heartbeat", daemon=True,
                                 args=(int(os.environ[HEARTBEAT_FD_ENV]), float(os.environ[HEARTBEAT_INTERVAL_ENV])))
    heartbeat.start()
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, _stop)
    quiet_known_noise()  # a rank is a command-line entry point: before its target imports diffusers
    fit_rank_threads()  # cores / ranks intra-op threads (OMP_NUM_THREADS from the launcher), one inter-op thread
    target = argv[0]
    sys.argv = list(argv)
    try:
        if target.endswith(".py"):
            sys.path[0] = os.path.dirname(os.path.abspath(target))  # as `python script.py` sets it
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except KeyboardInterrupt as stop:  # stopped by the launcher, which tells the user why
        # The finally blocks have run (staged files discarded); the interpreter's own teardown
        # with torch loaded takes seconds the launcher would wait for.
        sys.stdout.flush()
        sys.stderr.flush()
        signum = stop.args[0] if stop.args and isinstance(stop.args[0], int) else signal.SIGINT
        os._exit(128 + signum)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
