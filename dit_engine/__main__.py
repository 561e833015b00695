"""``python -m dit_engine [overrides]``: compose with Hydra, compile the plan, run.

Bad input is reported as one line on stderr with exit code 2, before anything runs.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dit_engine.config import register_schemas
from dit_engine.console import fail
from dit_engine.errors import DitEngineError


@hydra.main(config_path="pkg://dit_engine.conf", config_name="config", version_base=None)
def run_job(cfg: DictConfig) -> float | None:
    """One Hydra job: run the engine into Hydra's output directory."""
    from dit_engine.engine import Engine

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.runtime.choices.get("hydra/job_logging") == "disabled":
        cfg.quiet = True  # logging switched off: progress bars go too
    if cfg.quiet:
        logging.getLogger("dit_engine").setLevel(logging.WARNING)
    try:
        metrics = Engine(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task)).run()
    except DitEngineError as err:
        fail(err)
    return None if metrics is None else metrics["objective"]


def main() -> None:
    """Console entry point (``python -m dit_engine`` / ``dit-engine``)."""
    from dit_engine.cli import validate_command_line

    register_schemas()
    try:
        validate_command_line(sys.argv[1:])
    except DitEngineError as err:
        fail(err)
    run_job()


if __name__ == "__main__":
    main()
