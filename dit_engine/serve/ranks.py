"""A parallel server's ranks. ``python -m dit_engine.serve parallel=ulysses2`` starts them itself
(:func:`serve_on_ranks`, as a CLI run does: each rank runs :func:`main`); under
``torchrun --nproc-per-node N -m dit_engine.serve ...`` every process is one rank already and calls
:func:`serve_rank`. Every rank loads the pipeline and applies the same plan; then rank 0 serves
HTTP and the other ranks follow it over the control channel (:mod:`dit_engine.serve.control`).
Starting and watching the ranks is :mod:`dit_engine.launch`'s job, as for a CLI run.
"""

from __future__ import annotations

import sys

from dit_engine.launch.handoff import read_session
from dit_engine.launch.local import launch_session
from dit_engine.launch.rank import rank_exit_code
from dit_engine.parallel.mesh import bind_local_device, rank_from_env
from dit_engine.serve.control import BroadcastingRunner, RequestChannel, follow
from dit_engine.serve.engine import ServingEngine
from dit_engine.serve.runner import PipelineRunner
from dit_engine.serve.server import serve_http
from dit_engine.session import Session


def serve_rank(session: Session) -> None:
    """This process's part of a parallel server: load and apply the plan; rank 0 serves HTTP,
    the others do what it broadcasts until it stops."""
    if rank_from_env() == 0:
        engine = ServingEngine(session, runner=BroadcastingRunner(session))
        serve_http(engine)
        return
    runner = PipelineRunner(session)
    try:
        follow(runner, RequestChannel())
    finally:
        runner.close()


def serve_on_ranks(session: Session, world: int) -> None:
    """Start ``world`` local ranks that serve ``session``'s prepared plan (rank 0 listens) until
    stopped: Ctrl-C or SIGTERM (as the caller's signal handlers raise them) end up here once every
    rank has been stopped."""
    launch_session(session, world, "dit_engine.serve.ranks", [])


def main(work: str) -> int:
    """One rank started by :func:`serve_on_ranks`; its exit code."""
    session = read_session(work)
    if rank_from_env() > 0:
        session.cfg.quiet = True

    def run() -> None:
        bind_local_device(session.cfg.model.device)
        try:
            serve_rank(session)
        except KeyboardInterrupt:  # stopped (the launcher's SIGTERM, or Ctrl-C under torchrun): not a failure
            pass

    return rank_exit_code(run, "dit_engine.serve")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
