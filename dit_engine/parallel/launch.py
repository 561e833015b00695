"""The CLI starting its own ranks on one machine, through torch's elastic launcher (the engine
of ``torchrun``): one process per GPU, or CPU processes on gloo when there is no GPU.

:func:`launch_ranks` runs a module on N local ranks and, when one fails, returns only after the
launcher has stopped every other rank, raising the failed rank's one-line reason (each rank
records it with :func:`record_failure` into the folder named by ``DIT_ENGINE_RANK_ERRORS``).
:func:`run_on_ranks` is what ``python -m dit_engine parallel=...`` does with it: every rank runs
the same composed config (``python -m dit_engine.parallel.worker``); only rank 0 writes the run
directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dit_engine.errors import DitEngineError

ERRORS_ENV = "DIT_ENGINE_RANK_ERRORS"


class RankFailedError(RuntimeError):
    """A rank failed for a reason other than bad input (the message says which rank and why)."""


def record_failure(err: BaseException, bad_input: bool) -> None:
    """Record this rank's failure for the launching process (no-op outside :func:`launch_ranks`)."""
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


def launch_ranks(world: int, module: str, args: list[str], threads_per_rank: int | None = None) -> None:
    """Run ``python -m module *args`` (or ``python module *args`` for a ``.py`` path) on ``world``
    local ranks with torch's elastic launcher.

    Raises DitEngineError (bad input on a rank) or RankFailedError with the first failed rank's
    reason once every rank has ended.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    errors = Path(tempfile.mkdtemp(prefix="dit_engine_rank_errors_"))
    saved = {key: os.environ.get(key) for key in (ERRORS_ENV, "OMP_NUM_THREADS")}
    os.environ[ERRORS_ENV] = str(errors)
    if saved["OMP_NUM_THREADS"] is None:  # share the cores instead of every rank taking all of them
        os.environ["OMP_NUM_THREADS"] = str(threads_per_rank or max(1, (os.cpu_count() or 1) // world))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=world, run_id=f"dit_engine_{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
    )
    try:
        target = [module] if module.endswith(".py") else ["-m", module]
        elastic_launch(config, entrypoint=sys.executable)(*target, *args)
    except ChildFailedError as err:
        # The root cause is the first failure: the other ranks then fail on the closed connection.
        recorded = sorted((json.loads(p.read_text()) for p in errors.glob("rank*.json")), key=lambda r: r["time"])
        if recorded:
            first = recorded[0]
            message = f"rank {first['rank']} of {world} failed: {first['reason']}"
            raise (DitEngineError if first["bad_input"] else RankFailedError)(message) from None
        rank, failure = min(err.failures.items())
        raise RankFailedError(f"rank {rank} of {world} ended with exit code {failure.exitcode} (see its output above)") from None
    finally:
        shutil.rmtree(errors, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def launch_config(cfg: DictConfig, overrides: list[str], world: int, module: str, args: list[str]) -> None:
    """Run ``python -m module WORK *args`` on ``world`` local ranks, where the folder WORK holds the
    composed ``cfg`` and its ``overrides`` (read back by :func:`read_config`)."""
    work = Path(tempfile.mkdtemp(prefix="dit_engine_ranks_"))
    try:
        (work / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (work / "overrides.json").write_text(json.dumps(overrides))
        launch_ranks(world, module, [str(work), *args])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_config(work: str) -> tuple[DictConfig, list[str]]:
    """A rank's composed config and overrides, as :func:`launch_config` wrote them."""
    cfg = OmegaConf.load(Path(work, "config.yaml"))
    return cfg, json.loads(Path(work, "overrides.json").read_text())


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


def run_on_ranks(cfg: DictConfig, overrides: list[str], run_dir: Path, world: int) -> dict[str, Any] | None:
    """Run the composed ``cfg`` on ``world`` local ranks; rank 0 writes ``run_dir``. Returns its metrics."""
    launch_config(cfg, overrides, world, "dit_engine.parallel.worker", [str(run_dir)])
    metrics_file = run_dir / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
