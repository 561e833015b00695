"""One rank of a CLI run the CLI launched itself (``python -m dit_engine.parallel.worker WORK RUN_DIR``).

Every rank loads the same pipeline and runs the same workload; rank 0 writes ``RUN_DIR`` (and
appends to the run's log), the others run into a scratch folder inside ``WORK``, which the
launcher removes when the launch ends, however the rank ended.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch.distributed as dist

from dit_engine.console import quiet_known_noise
from dit_engine.parallel.launch import rank_exit_code, read_config
from dit_engine.parallel.mesh import bind_local_device, rank_from_env
from dit_engine.session import Session


def main(work: str, run_dir: str) -> int:
    quiet_known_noise()
    rank = rank_from_env()
    cfg, overrides = read_config(work)
    if rank > 0:
        cfg.quiet = True  # one progress display: rank 0's
    logging.basicConfig(level=logging.WARNING if cfg.quiet else logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if rank == 0:
        handler = logging.FileHandler(Path(run_dir, "dit_engine.log"))
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][rank 0][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)

    def run() -> None:
        bind_local_device(cfg.model.device)
        Session(cfg, overrides).prepare().run(run_dir if rank == 0 else Path(work, f"rank{rank}"))

    try:
        return rank_exit_code(run, "dit_engine")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
