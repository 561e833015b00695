"""The control channel of a parallel server: rank 0 serves HTTP and sends each pipeline operation
to the other ranks before doing it itself.

Rank 0's :class:`BroadcastingRunner` sends each operation (a pipeline call with its workload,
seeds and LoRA; a LoRA loaded or deleted; stop) over a control group of its own, and the other
ranks do it in :func:`follow`, so every rank does the same operations in the same order and the
plan's collectives meet.

The control group is gloo with a long timeout: an idle server waits for requests for days, while
the plan's own groups keep their short timeout for the collectives inside a call. Operations travel
as JSON bytes (:func:`encode`): nothing a rank receives is unpickled.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
from datetime import timedelta
from typing import Any

from dit_engine.serve.runner import PipelineRunner
from dit_engine.session import Session
from dit_engine.workload import Workload

log = logging.getLogger("dit_engine.serve")

#: how long a follower waits for rank 0's next operation
IDLE_TIMEOUT = timedelta(days=365)


def encode(operation: str, args: tuple) -> bytes:
    """One operation as JSON. Besides JSON's own types, a :class:`~dit_engine.workload.Workload`
    and PIL images (an edit's ``image``) are written as tagged objects; anything else is refused
    (TypeError, before anything is sent)."""
    return json.dumps({"operation": operation, "args": [_to_json(arg) for arg in args]}).encode()


def decode(data: bytes) -> tuple[str, list]:
    """The operation :func:`encode` wrote, and its arguments."""
    message = json.loads(data, object_hook=_from_json)
    return message["operation"], message["args"]


def _to_json(value: Any) -> Any:
    from PIL import Image

    if isinstance(value, Workload):
        return {"__workload__": {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Image.Image):
        png = io.BytesIO()
        value.save(png, format="PNG")
        return {"__png__": base64.b64encode(png.getvalue()).decode()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _to_json(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} to the other ranks")


def _from_json(node: dict) -> Any:
    if node.keys() == {"__workload__"}:
        return Workload(**node["__workload__"])
    if node.keys() == {"__png__"}:
        from PIL import Image

        return Image.open(io.BytesIO(base64.b64decode(node["__png__"]))).convert("RGB")
    return node


class RequestChannel:
    """Rank 0 -> every rank: one operation at a time, JSON (:func:`encode`) broadcast as a length
    and a byte tensor over a gloo group of its own. Nothing a rank receives is unpickled.

    Created on every rank, after the plan's process group (a collective call: same order on all)."""

    def __init__(self):
        import torch.distributed as dist

        self._dist = dist
        self.group = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)

    def send(self, operation: str, *args: Any) -> None:
        import torch

        data = encode(operation, args)
        self._dist.broadcast(torch.tensor([len(data)], dtype=torch.int64), src=0, group=self.group)
        self._dist.broadcast(torch.frombuffer(bytearray(data), dtype=torch.uint8), src=0, group=self.group)

    def receive(self) -> tuple[str, list]:
        import torch

        size = torch.zeros(1, dtype=torch.int64)
        self._dist.broadcast(size, src=0, group=self.group)
        data = torch.empty(int(size.item()), dtype=torch.uint8)
        self._dist.broadcast(data, src=0, group=self.group)
        return decode(data.numpy().tobytes())


class BroadcastingRunner(PipelineRunner):
    """Rank 0's runner: each operation goes to every rank first, then runs here."""

    def __init__(self, session: Session, channel_factory=RequestChannel):
        super().__init__(session)
        self.channel = channel_factory()

    def generate(self, workload, seeds, frames, lora):
        self.channel.send("generate", workload, seeds, frames, lora)
        return super().generate(workload, seeds, frames, lora)

    def load_lora(self, name, path):
        self.channel.send("load_lora", name, path)
        super().load_lora(name, path)

    def unload_lora(self, name):
        self.channel.send("unload_lora", name)
        super().unload_lora(name)

    def close(self):
        try:
            self.channel.send("stop")
        except Exception as err:  # a follower already gone (stopped with every rank): nothing to stop
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
