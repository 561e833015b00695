"""Serving a parallel plan: rank 0 serves HTTP and broadcasts each pipeline operation to the others.

``python -m dit_engine.serve parallel=ulysses2`` starts its ranks itself (torch's elastic launcher,
as a CLI run does); under ``torchrun --nproc-per-node N -m dit_engine.serve ...`` every process is
one rank already. Every rank loads the pipeline and applies the same plan; then rank 0 runs the
HTTP server and the other ranks wait in :func:`follow`. Rank 0's :class:`BroadcastingRunner`
sends each operation (a pipeline call with its workload, seeds and LoRA; a LoRA loaded or
deleted; stop) over a control group of its own before doing it itself, so every rank does the
same operations in the same order and the plan's collectives meet.

The control group is gloo with a long timeout: an idle server waits for requests for days, while
the plan's own groups keep their short timeout for the collectives inside a call.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from typing import Any

from dit_engine.serve.engine import PipelineRunner
from dit_engine.session import Session

log = logging.getLogger("dit_engine.serve")

#: how long a follower waits for rank 0's next operation
IDLE_TIMEOUT = timedelta(days=365)


class RequestChannel:
    """Rank 0 -> every rank: one picklable message at a time (``torch.distributed`` objects over gloo).

    Created on every rank, after the plan's process group (a collective call: same order on all)."""

    def __init__(self):
        import torch.distributed as dist

        self._dist = dist
        self.group = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)

    def send(self, message: tuple) -> None:
        self._dist.broadcast_object_list([message], src=0, group=self.group)

    def receive(self) -> tuple:
        box: list[Any] = [None]
        self._dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


class BroadcastingRunner(PipelineRunner):
    """Rank 0's runner: each operation goes to every rank first, then runs here."""

    def __init__(self, session: Session, channel_factory=RequestChannel):
        super().__init__(session)
        self.channel = channel_factory()

    def generate(self, workload, seeds, frames, lora):
        self.channel.send(("generate", (workload, seeds, frames, lora)))
        return super().generate(workload, seeds, frames, lora)

    def load_lora(self, name, path):
        self.channel.send(("load_lora", (name, path)))
        super().load_lora(name, path)

    def unload_lora(self, name):
        self.channel.send(("unload_lora", (name,)))
        super().unload_lora(name)

    def close(self):
        try:
            self.channel.send(("stop", ()))
        except Exception as err:  # a follower already gone (Ctrl-C reached every rank): nothing to stop
            log.debug("could not tell the other ranks to stop: %s", err)
        super().close()


OPERATIONS = ("generate", "load_lora", "unload_lora")


def follow(runner: PipelineRunner, channel: RequestChannel) -> None:
    """Do what rank 0 broadcasts until it says stop. An operation that fails here failed on rank 0
    too (same inputs, same model), which answers the request; the follower waits for the next."""
    while True:
        operation, args = channel.receive()
        if operation == "stop":
            return
        if operation not in OPERATIONS:
            raise RuntimeError(f"rank 0 sent an unknown operation {operation!r}")
        try:
            getattr(runner, operation)(*args)
        except Exception as err:  # noqa: BLE001 - see the docstring
            log.debug("%s failed here as on rank 0: %s", operation, err)


def serve_rank(session: Session, serve_http) -> None:
    """This process's part of a parallel server: load and plan; rank 0 serves with ``serve_http(engine)``."""
    from dit_engine.parallel.mesh import rank_from_env
    from dit_engine.serve.engine import ServingEngine

    if rank_from_env() == 0:
        engine = ServingEngine(session, runner=BroadcastingRunner(session))
        serve_http(engine)
        return
    runner = PipelineRunner(session)
    try:
        follow(runner, RequestChannel())
    finally:
        runner.close()


def serve_on_ranks(session: Session, overrides: list[str], world: int) -> None:
    """Start ``world`` local ranks that serve ``session``'s composed config (rank 0 listens)."""
    from dit_engine.parallel.launch import launch_config

    # A server ends by a signal: the launcher's own notices of it (three lines per stop) are noise.
    for name in ("torch.distributed.elastic.agent.server.api", "torch.distributed.elastic.multiprocessing.api"):
        logging.getLogger(name).setLevel(logging.ERROR)
    launch_config(session.cfg, overrides, world, "dit_engine.serve.ranks", [])


def main(work: str) -> int:
    """One rank started by :func:`serve_on_ranks`."""
    from dit_engine.console import quiet_known_noise
    from dit_engine.parallel.launch import rank_exit_code, read_config
    from dit_engine.parallel.mesh import bind_local_device, rank_from_env
    from dit_engine.serve.__main__ import serve_http

    quiet_known_noise()
    cfg, overrides = read_config(work)
    if rank_from_env() > 0:
        cfg.quiet = True

    def run() -> None:
        bind_local_device(cfg.model.device)
        try:
            serve_rank(Session(cfg, overrides).prepare(), serve_http)
        except KeyboardInterrupt:  # Ctrl-C reaches every rank: a stop, not a failure
            pass

    return rank_exit_code(run, "dit_engine.serve")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
