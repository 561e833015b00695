"""The CLI and the server starting their own ranks on one machine: one process per GPU, or CPU
processes on gloo when there is no GPU.

:func:`launch_ranks` runs a program on N local ranks (each through :mod:`dit_engine.launch.rank`,
which ties its life to the launcher's) and watches them: output is passed through; when a rank
fails, stops responding (no heartbeat for ``parallel.heartbeat_timeout_s``) or the launcher is
interrupted (Ctrl-C, SIGTERM), every rank is stopped, what the others print from then on is
dropped, and the launch raises one line naming the rank that caused it. Ranks record their own
failures with :func:`~dit_engine.launch.rank.record_failure` into the folder named by
``DIT_ENGINE_RANK_ERRORS``.

Everything listens on the loopback interface only: the rendezvous store is a TCPStore in the
launcher on a socket bound to 127.0.0.1 (the ranks join it as clients, torch's agent-store
protocol), and gloo's and NCCL's own sockets are bound to the loopback interface.

:func:`launch_session` is how a prepared session reaches its ranks: planned once here, handed over
in a work folder (:mod:`dit_engine.launch.handoff`), applied as it is on every rank.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dit_engine.errors import DitEngineError
from dit_engine.launch.handoff import write_session
from dit_engine.launch.rank import ERRORS_ENV, HEARTBEAT_FD_ENV, HEARTBEAT_INTERVAL_ENV, LAUNCHER_PID_ENV
from dit_engine.threads import rank_environment, warn_if_oversubscribed

if TYPE_CHECKING:
    from dit_engine.session import Session

#: how long stopped ranks get to clean up (their staged outputs) before they are killed
STOP_GRACE_S = 5.0
#: how often the launcher looks at its ranks
POLL_S = 0.1


class RankFailedError(RuntimeError):
    """A rank failed for a reason other than bad input (the message says which rank and why)."""


def _loopback_interface() -> str | None:
    names = {name for _, name in socket.if_nameindex()}
    return next((name for name in ("lo", "lo0") if name in names), None)


def _write(stream, data: bytes) -> None:
    """Pass a rank's output on to this process's ``stream`` (bytes as they came: progress bars too)."""
    try:
        stream.flush()
        if hasattr(stream, "buffer"):
            stream.buffer.write(data)
            stream.buffer.flush()
        else:  # a text-only stream (a test's capture)
            stream.write(data.decode(errors="replace"))
    except (OSError, ValueError):  # our own output is gone (a closed pipe): nothing to show it on
        pass


@dataclass(eq=False)
class _Rank:
    number: int
    process: subprocess.Popen
    last_beat: float
    exit_code: int | None = None
    ended: float = 0.0
    signalled: bool = False  # stopped by the launcher: its end is not a cause
    quiet: bool = False  # its output is dropped (it is being stopped, or another rank failed)


@dataclass
class _Launch:
    """The running ranks of one launch and what the launcher reads from them."""

    world: int
    heartbeat_timeout_s: float
    store: Any  # the rendezvous store (a TCPStore), held here alone: dropped, it closes
    ranks: list[_Rank] = field(default_factory=list)
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def start(self, rank: int, command: list[str], env: dict[str, str]) -> None:
        beat_read, beat_write = os.pipe()
        env = {**env, HEARTBEAT_FD_ENV: str(beat_write)}
        try:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       pass_fds=(beat_write,), start_new_session=True)
        except BaseException:
            os.close(beat_read)
            raise
        finally:
            os.close(beat_write)  # the rank holds the only write end
        self.ranks.append(_Rank(rank, process, time.monotonic()))
        self.selector.register(process.stdout, selectors.EVENT_READ, (rank, sys.stdout))
        self.selector.register(process.stderr, selectors.EVENT_READ, (rank, sys.stderr))
        self.selector.register(beat_read, selectors.EVENT_READ, (rank, None))

    def pump(self, timeout: float) -> int:
        """Pass on what the ranks wrote and note their heartbeats, waiting up to ``timeout``;
        how many pipes had something.

        A rank's heartbeat pipe closes when it ends; if it failed, the others are quieted before
        anything read with it is passed on: their complaints about its closed connections
        (tracebacks) would bury the one line that names it."""
        ready = [(key, os.read(key.fd, 65536)) for key, _ in self.selector.select(timeout)]
        for key, data in ready:
            rank, stream = key.data
            if not data:
                self._forget(key.fileobj)
                if stream is None:
                    self._ended(self.ranks[rank])
        for key, data in ready:
            rank, stream = key.data
            if data and stream is None:
                self.ranks[rank].last_beat = time.monotonic()
            elif data and not self.ranks[rank].quiet:
                _write(stream, data)
        return len(ready)

    def _ended(self, rank: _Rank) -> None:
        try:
            code = rank.process.wait(timeout=1)
        except subprocess.TimeoutExpired:  # a child of the rank holds the pipe: reap() sees the end
            return
        if code != 0:
            for other in self.ranks:
                if other is not rank:
                    other.quiet = True

    def _forget(self, pipe) -> None:
        self.selector.unregister(pipe)
        if isinstance(pipe, int):  # a heartbeat pipe
            os.close(pipe)
        else:
            pipe.close()

    def reap(self) -> None:
        """Note the exit code of every rank that ended."""
        for rank in self.running():
            if rank.process.poll() is not None:
                rank.exit_code, rank.ended = rank.process.returncode, time.monotonic()

    def running(self) -> list[_Rank]:
        return [rank for rank in self.ranks if rank.exit_code is None]

    def watch(self) -> bool:
        """Wait until every rank succeeded (False) or one failed (True); raise if one stops responding."""
        while True:
            self.pump(POLL_S)
            self.reap()
            if all(rank.exit_code == 0 for rank in self.ranks):
                while self.pump(0):  # what they wrote last (the final line)
                    pass
                return False
            if any(rank.exit_code not in (None, 0) for rank in self.ranks):
                self.pump(0)  # the failed rank's last words, before the others' are dropped
                return True
            now = time.monotonic()
            silent = [rank for rank in self.running() if now - rank.last_beat > self.heartbeat_timeout_s]
            if silent:
                self.stop(first=silent)
                raise RankFailedError(
                    f"rank {silent[0].number} of {self.world} stopped responding (no heartbeat for {self.heartbeat_timeout_s:g} s); "
                    "every rank was stopped; if a rank may legitimately stall that long, raise parallel.heartbeat_timeout_s"
                )

    def stop(self, first: Sequence[_Rank] = ()) -> None:
        """Stop every running rank: ``first`` (unresponsive) killed at once, the others sent SIGTERM
        and killed if they have not ended after :data:`STOP_GRACE_S`. What they print is dropped.

        The rendezvous store closes first: a rank waiting on it (for a peer that will never join)
        fails at once, where its stop signal would wait until the wait timed out."""
        self.store = None
        for rank in self.running():
            rank.signalled = rank.quiet = True
            rank.process.send_signal(signal.SIGKILL if rank in first else signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.running() and time.monotonic() < deadline:
            self.pump(POLL_S)
            self.reap()
        for rank in self.running():
            rank.process.kill()
        for rank in self.running():
            rank.process.wait()
        self.reap()

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            self._forget(key.fileobj)
        self.selector.close()

    def blame(self, errors: Path) -> Exception:
        """The failure that ended the launch, as one line: a rank killed or stopped from outside by
        a signal the launcher did not send (the others then fail on its closed connections), else
        the first failure a rank recorded, else a rank that crashed on a signal of its own (a C++
        abort or a segfault: also what a rank does when a peer's failure breaks a collective, so it
        comes after the recorded root cause), else the first rank that ended with an error code."""
        ended = sorted((r for r in self.ranks if not r.signalled and r.exit_code), key=lambda r: r.ended)
        signalled = [(r, _signal_name(r.exit_code)) for r in ended if _signal_name(r.exit_code)]
        external = [(r, name) for r, name in signalled if name not in CRASH_SIGNALS]
        if external:
            return self._killed(*external[0])
        recorded = sorted((json.loads(p.read_text()) for p in errors.glob("rank*.json")), key=lambda r: r["time"])
        if recorded:
            first = recorded[0]
            message = f"rank {first['rank']} of {self.world} failed: {first['reason']}"
            return (DitEngineError if first["bad_input"] else RankFailedError)(message)
        if signalled:
            return self._killed(*signalled[0])
        return RankFailedError(f"rank {ended[0].number} of {self.world} ended with exit code {ended[0].exit_code} (see its output above)")

    def _killed(self, rank: _Rank, name: str) -> RankFailedError:
        hint = " (the kernel's out-of-memory killer sends SIGKILL: see dmesg)" if name == "SIGKILL" else ""
        return RankFailedError(f"rank {rank.number} of {self.world} was killed by {name}{hint}")


#: signals a process raises on itself when it crashes (C++ std::terminate -> abort, bad memory
#: access...), as opposed to a kill from outside (the OOM killer's SIGKILL, a user's SIGTERM)
CRASH_SIGNALS = frozenset({"SIGABRT", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS"})


def _signal_name(exit_code: int) -> str | None:
    """The signal that ended a rank: killed by it (negative code), or stopped by SIGINT / SIGTERM
    (:mod:`.rank` exits 128 + the signal's number)."""
    if exit_code < 0:
        return signal.Signals(-exit_code).name
    if exit_code - 128 in (signal.SIGINT, signal.SIGTERM):
        return signal.Signals(exit_code - 128).name
    return None


def launch_ranks(world: int, module: str, args: list[str], heartbeat_timeout_s: float = 60.0,
                 threads: int | None = None) -> None:
    """Run ``python -m module *args`` (or ``python module *args`` for a ``.py`` path) on ``world``
    local ranks and wait for them (see the module docstring).

    Raises DitEngineError (bad input on a rank) or RankFailedError naming the rank that failed,
    once every rank has ended. Interrupted (Ctrl-C's KeyboardInterrupt, or whatever a signal
    handler raises), it stops every rank and re-raises.
    """
    from torch.distributed import TCPStore

    errors = Path(tempfile.mkdtemp(prefix="dit_engine_rank_errors_"))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(world)
    port = listener.getsockname()[1]
    # TCPStore binds to every interface unless given a bound socket; it takes this one over.
    launch = _Launch(world, heartbeat_timeout_s, store=TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False,
                                                                master_listen_fd=listener.detach(), use_libuv=True))
    env = {
        **os.environ,
        "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",  # every rank joins the launcher's store as a client
        ERRORS_ENV: str(errors), LAUNCHER_PID_ENV: str(os.getpid()),
        HEARTBEAT_INTERVAL_ENV: str(min(5.0, heartbeat_timeout_s / 4)),
        "PYTHONUNBUFFERED": "1",  # the ranks' output is passed on as it is written
    }
    loopback = _loopback_interface()
    if loopback is not None:  # the collectives' own sockets: a local launch needs no other interface
        env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = loopback
    if threads is not None:  # the run's threads= setting: each rank's own
        env["OMP_NUM_THREADS"] = str(threads)
    env = rank_environment(env, world)  # cores / ranks intra-op threads each, never more than the cores
    warn_if_oversubscribed(world * int(env["OMP_NUM_THREADS"]))
    command = [sys.executable, "-m", "dit_engine.launch.rank", module, *args]
    try:
        for rank in range(world):
            launch.start(rank, command, {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)})
        if launch.watch():  # a rank failed: stop the others, then say which one caused it
            launch.stop()
            raise launch.blame(errors) from None
    finally:
        launch.stop()  # interrupted (Ctrl-C, SIGTERM) or failed: no rank outlives the launch; the store closes
        launch.close()
        shutil.rmtree(errors, ignore_errors=True)


def launch_session(session: Session, world: int, module: str, args: list[str]) -> None:
    """Run ``python -m module WORK *args`` on ``world`` local ranks, where the folder WORK holds the
    prepared ``session`` (read back by :func:`~dit_engine.launch.handoff.read_session`); it is
    removed when the launch ends (ranks may keep scratch files in it)."""
    work = Path(tempfile.mkdtemp(prefix="dit_engine_ranks_"))
    try:
        write_session(session, work)
        launch_ranks(world, module, [str(work), *args], heartbeat_timeout_s=session.plan.config_of("parallel").heartbeat_timeout_s,
                     threads=session.cfg.get("threads"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
