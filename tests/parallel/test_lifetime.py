"""How the ranks the CLI and the server start live and die (dit_engine.launch.local and .rank):
Ctrl-C and SIGTERM stop every rank and exit 130 / 143 with one line; ranks die with a SIGKILLed
launcher; a rank killed by a signal is blamed, not the survivor; a stopped rank is found by its
heartbeat; nothing listens beyond the loopback; the server's control channel is JSON; settings
that cannot work are refused at plan time.

Real runs are started as subprocesses marked by an environment variable, which their ranks
inherit: the ranks are found by it in /proc.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from dit_engine.launch.local import RankFailedError, launch_ranks
from dit_engine.launch.rank import LAUNCHER_PID_ENV
from dit_engine.testing.cli import run_cli
from dit_engine.testing.servers import free_port

HERE = Path(__file__).parent
MARKER = "DIT_ENGINE_TEST_RUN"
LONG_RUN = ["parallel=ulysses2", "workload.repeats=50", "quiet=true"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _default_sigint() -> None:
    # A test run started in the background inherits SIGINT ignored; a user's terminal does not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], cwd: Path, marker: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", MARKER: marker}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, preexec_fn=_default_sigint,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ranks(marker: str) -> dict[int, int]:
    """rank -> pid of the ranks started by the run marked ``marker``."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            environ = Path("/proc", entry, "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"{MARKER}={marker}".encode() in environ and any(v.startswith(f"{LAUNCHER_PID_ENV}=".encode()) for v in environ):
            rank = next(v for v in environ if v.startswith(b"RANK="))
            found[int(rank[len("RANK="):])] = int(entry)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended (its parent has not collected it yet)


def _wait_for(condition, timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(what)
        time.sleep(0.1)
    return time.monotonic() - started


def _running(process: subprocess.Popen, marker: str, run_dir: Path) -> dict[int, int]:
    """Wait until both ranks run and rank 0 is in the workload (its staging folder exists); their pids."""

    def started() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the run ended early ({process.returncode}): {process.stderr.read()[-2000:]}")
        return len(_ranks(marker)) == 2 and any(run_dir.rglob(".staging-*"))

    _wait_for(started, 180, "the ranks did not start within 180 s")
    time.sleep(1)  # well inside the workload's collectives
    return _ranks(marker)


def _left_nothing_complete(run_dir: Path) -> None:
    assert not list(run_dir.rglob("metrics.json")) and not list(run_dir.rglob("plan.txt"))
    assert not list(run_dir.rglob(".staging-*")), "a rank was killed before it discarded its staged files"


def _stop_and_check(args: list[str], out: Path, stop: signal.Signals, code: int, line: str) -> None:
    """Start the CLI with ``args`` (writing into ``out``), send ``stop`` once both ranks are in the
    workload: it must exit ``code`` with the one stderr ``line``, no rank alive, nothing complete."""
    marker = uuid.uuid4().hex
    process = _start(["dit_engine", *args], out.parent, marker)
    ranks = _running(process, marker, out)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert stderr.splitlines() == [line]
    assert not any(_alive(pid) for pid in ranks.values())
    _left_nothing_complete(out)


@pytest.mark.slow
def test_ctrl_c_stops_a_parallel_sweep_in_one_line_and_no_rank_outlives_it(tmp_path):
    _stop_and_check(["-m", *LONG_RUN, "workload.seed=0,1", "hydra.sweep.dir=sweep"], tmp_path / "sweep", signal.SIGINT,
                    130, "dit_engine: interrupted; the unfinished run left no outputs in place")


def _listening(pids: list[int]) -> list[tuple[str, int]]:
    """(local address in /proc/net's hex, pid) of every listening TCP socket the processes hold."""
    owner = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[len("socket:["):-1]] = pid
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:  # 0A: LISTEN
                found.append((fields[1].split(":")[0], owner[fields[9]]))
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::1, mapped


@pytest.mark.slow
def test_ranks_listen_on_loopback_only_and_die_with_a_sigkilled_launcher(tmp_path):
    marker = uuid.uuid4().hex
    process = _start(["dit_engine", *LONG_RUN, "hydra.run.dir=run"], tmp_path, marker)
    ranks = _running(process, marker, tmp_path / "run")
    sockets = _listening([process.pid, *ranks.values()])
    assert any(pid == process.pid for _, pid in sockets), "the launcher's rendezvous store was not found"
    assert all(address in LOOPBACK for address, _ in sockets), sockets
    arguments = Path(f"/proc/{ranks[0]}/cmdline").read_bytes().decode().split("\0")
    environ = Path(f"/proc/{ranks[0]}/environ").read_bytes().decode().split("\0")
    launch_folders = [a for a in arguments + [v.split("=", 1)[-1] for v in environ] if "/dit_engine_rank" in a]
    process.kill()  # what the out-of-memory killer does
    process.wait()
    seconds = _wait_for(lambda: not any(_alive(pid) for pid in ranks.values()), 10,
                        "ranks still alive 10 s after their launcher was killed")
    print(f"ranks gone {seconds:.2f} s after the launcher was killed")
    for folder in launch_folders:  # the launcher's temporary folders: only a launcher that ends removes them
        shutil.rmtree(folder)


@pytest.mark.slow
def test_sigterm_stops_a_parallel_run_in_one_line_exit_143(tmp_path):
    _stop_and_check([*LONG_RUN, "hydra.run.dir=run"], tmp_path / "run", signal.SIGTERM,
                    143, "dit_engine: stopped by SIGTERM; the unfinished run left no outputs in place")


def _stamp(path: Path) -> tuple[int, float]:
    pid, when = path.read_text().split()
    return int(pid), float(when)


def test_a_rank_killed_by_a_signal_is_blamed_not_the_survivor(tmp_path, capfd):
    """Rank 1 is SIGKILLed (no failure recorded); rank 0's all-reduce then fails on the closed
    connection: the launch names rank 1, and rank 0's traceback is not passed on."""
    stamp = tmp_path / "stamp"
    with pytest.raises(RankFailedError, match=r"^rank 1 of 2 was killed by SIGKILL \(the kernel's out-of-memory killer"):
        launch_ranks(2, str(HERE / "lifetime_rank.py"), ["SIGKILL", "1", str(stamp)])
    ended = time.time() - _stamp(stamp)[1]
    _, stderr = capfd.readouterr()
    assert "Traceback" not in stderr and "Connection reset" not in stderr, stderr[-2000:]
    print(f"launch ended {ended:.2f} s after rank 1 was killed")


def test_a_stopped_rank_is_found_by_its_heartbeat(tmp_path):
    """Rank 1 is SIGSTOPped; rank 0 waits for it in an all-reduce (for parallel.timeout_s): the
    heartbeat ends the launch within its bound and kills the stopped rank."""
    stamp = tmp_path / "stamp"
    with pytest.raises(RankFailedError, match=r"^rank 1 of 2 stopped responding \(no heartbeat for 5 s\)"):
        launch_ranks(2, str(HERE / "lifetime_rank.py"), ["SIGSTOP", "1", str(stamp)], heartbeat_timeout_s=5)
    pid, stopped = _stamp(stamp)
    detected = time.time() - stopped
    print(f"stopped rank detected and the launch ended {detected:.2f} s after SIGSTOP")
    assert 3.5 < detected < 12  # silent for 5 s after its last beat (every 1.25 s), then stopped
    assert not _alive(pid)


@pytest.mark.slow
def test_a_parallel_server_stops_every_rank_on_sigterm_in_one_line_exit_143(tmp_path):
    """(Ctrl-C takes the launcher's path of the CLI's sweep test above, then the server's line.)"""
    pytest.importorskip("uvicorn")
    marker, port = uuid.uuid4().hex, free_port()
    process = _start(["dit_engine.serve", "parallel=ulysses2", f"serve.port={port}"], tmp_path, marker)

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the server ended early ({process.returncode}): {process.stderr.read()[-2000:]}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200
        except OSError:
            return False

    _wait_for(healthy, 180, "the server did not answer within 180 s")
    ranks = _ranks(marker)
    assert len(ranks) == 2
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    lines = stderr.splitlines()
    serving = next(i for i, text in enumerate(lines) if " on http://" in text)  # rank 0's line when it started serving
    assert lines[serving + 1:] == ["dit_engine.serve: stopped (SIGTERM)"]
    assert not any(_alive(pid) for pid in ranks.values())


def test_the_servers_control_channel_is_json_and_refuses_what_json_cannot_hold():
    from PIL import Image

    from dit_engine.serve.control import decode, encode
    from dit_engine.workload import Workload

    image = Image.new("RGB", (4, 4), (10, 20, 30))
    workload = Workload(name="w", prompts=["a"], seed=0, num_inference_steps=2, guidance_scale=1.0, height=8, width=8,
                        batch_size=0, warmup=0, repeats=1, call_kwargs={"image": image, "negative_prompt": ["b"]})
    data = encode("generate", (workload, [3, 4], False, ("fox", 0.5)))
    json.loads(data)  # plain JSON: nothing to unpickle
    operation, (received, seeds, frames, lora) = decode(data)
    assert operation == "generate" and (seeds, frames, lora) == ([3, 4], False, ["fox", 0.5])
    assert received == dataclasses.replace(workload, call_kwargs={"image": image, "negative_prompt": ["b"]})
    with pytest.raises(TypeError, match="cannot send a object"):
        encode("generate", (object(),))


@pytest.mark.parametrize("overrides,expected", [
    (["parallel.backend=nccl"], "parallel.backend=nccl needs CUDA GPUs and NCCL, but the model runs on cpu"),
    (["parallel.timeout_s=1e30"], "parallel.timeout_s=1e+30 must be > 0 and at most a day: use 1 to 86400 seconds"),
    (["parallel.heartbeat_timeout_s=1"], "parallel.heartbeat_timeout_s=1.0: use 5 to 3600 seconds"),
    (["parallel.ulysses_degree=100000", "dry_run=true"], "multiply to 100000 ranks (ulysses 100000), more than the 64"),
    (["compile=full", "compile.fullgraph=true"], "compile.fullgraph=true cannot hold the sequence-parallel attention"),
    (["compile=regional", "compile.fullgraph=true"], "compile.fullgraph=true cannot hold the sequence-parallel attention"),
])
def test_settings_that_cannot_work_are_refused_in_one_line_before_anything_starts(tmp_path, monkeypatch, overrides, expected):
    monkeypatch.chdir(tmp_path)
    code, stderr = run_cli("parallel=ulysses2", "model.device=cpu", *overrides, "hydra.run.dir=run")
    assert code == 2, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith("dit_engine: error: ") and expected in stderr, stderr
    assert not (tmp_path / "run").exists()


def test_a_large_world_is_planned_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stderr = run_cli("parallel=ulysses2", "parallel.ulysses_degree=100", "parallel.allow_large_world=true", "dry_run=true",
                           "hydra.run.dir=run")
    assert code == 0, stderr
    assert "torch.distributed over 100 rank(s)" in (tmp_path / "run" / "plan.txt").read_text()


def test_blame_puts_a_recorded_failure_before_a_peers_crash_and_an_outside_kill_before_both(tmp_path):
    """A rank whose peer failed may abort in C++ (``terminate called without an active
    exception``: SIGABRT) before the launcher sees the peer's exit: the peer's recorded Python
    failure is the cause. A kill from outside (SIGKILL) records nothing and comes first."""
    from dit_engine.launch.local import _Launch, _Rank

    def launch(*codes):
        return _Launch(world=2, heartbeat_timeout_s=60, store=None,
                       ranks=[_Rank(n, None, 0.0, exit_code=code, ended=float(n)) for n, code in enumerate(codes)])

    (tmp_path / "rank1.json").write_text(json.dumps({"rank": 1, "reason": "RuntimeError: boom", "bad_input": False, "time": 5.0}))
    assert str(launch(-signal.SIGABRT, 1).blame(tmp_path)) == "rank 1 of 2 failed: RuntimeError: boom"
    assert str(launch(1, -signal.SIGKILL).blame(tmp_path)).startswith("rank 1 of 2 was killed by SIGKILL")
    (tmp_path / "rank1.json").unlink()
    assert str(launch(-signal.SIGSEGV, 1).blame(tmp_path)) == "rank 0 of 2 was killed by SIGSEGV"
