"""Ctrl-C and SIGTERM stop a run the same way, each with its exit code (130, 143); shared by the
CLI and the server."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that a run stops
    the same way (its ranks stopped, its staged files discarded); the process then exits 143."""


def _raise_terminated(signum, frame) -> None:
    if _in_finalizer(frame):
        # Python prints and ignores an exception raised inside __del__: the stop would be lost and
        # the process go on. Deliver the signal again a moment later, outside the finalizer.
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return
    raise Terminated


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def stop_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`Terminated` (left alone when the process was started with SIGTERM
    ignored, as Python leaves an ignored SIGINT); the handler it replaced."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    return previous


def stop_exit_code(stop: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (128 + the signal's number, as a shell reports it)."""
    return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
