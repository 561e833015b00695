"""A CLI run on local ranks: :func:`run_on_ranks` in the CLI's process, :func:`main` on each rank
(``python -m dit_engine.launch.run WORK RUN_DIR``).

Every rank loads the same pipeline, applies the plan the CLI prepared and runs the same workload;
rank 0 writes ``RUN_DIR`` (and appends to the run's log), the others run into a scratch folder
inside ``WORK``, which the launcher removes when the launch ends, however the rank ended.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from dit_engine.launch.handoff import read_session
from dit_engine.launch.local import launch_session
from dit_engine.launch.rank import rank_exit_code
from dit_engine.parallel.mesh import bind_local_device, rank_from_env
from dit_engine.session import Session


def run_on_ranks(session: Session, run_dir: Path, world: int) -> dict[str, Any] | None:
    """Run ``session`` on ``world`` local ranks; rank 0 writes ``run_dir``. Returns its metrics."""
    if session.plan is None:
        session.prepare()
    launch_session(session, world, "dit_engine.launch.run", [str(run_dir)])
    metrics_file = run_dir / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.is_file() else None


def main(work: str, run_dir: str) -> int:
    """One rank started by :func:`run_on_ranks`; its exit code."""
    rank = rank_from_env()
    session = read_session(work)
    if rank > 0:
        session.cfg.quiet = True  # one progress display: rank 0's
    logging.basicConfig(level=logging.WARNING if session.quiet else logging.INFO,
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if rank == 0:
        handler = logging.FileHandler(Path(run_dir, "dit_engine.log"))
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][rank 0][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)

    def run() -> None:
        bind_local_device(session.cfg.model.device)
        session.run(run_dir if rank == 0 else Path(work, f"rank{rank}"))

    try:
        return rank_exit_code(run, "dit_engine")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
