"""What the replicas of ``serve.replicas=N`` share (:mod:`dit_engine.serve.replicas`): one small
Ray actor, :class:`SharedState`, holding the images and videos kept for later requests, the LoRAs
every replica should hold and each replica's counters; and :class:`SharedView`, a replica's handle
on it, which the :class:`~dit_engine.serve.engine.ServingEngine` takes in place of its
process-local stores.

So a URL or a video id handed out by one replica is found by whichever replica the next request
reaches, a LoRA loaded through one is loaded by all, and ``/metrics`` answers the service's sum.
The actor outlives any replica (a replica that dies and is replaced finds everything there); it
lives as long as the server. Nothing here imports torch: the actor's process stays small.
"""

from __future__ import annotations

import threading
from typing import Any

from dit_engine.serve.metrics import Metrics
from dit_engine.serve.storage import Kept

#: the actor's name in the server's Ray namespace
STATE_ACTOR = "dit_engine_shared_state"
#: how often each replica sends its counters to the actor, in seconds (``/metrics`` is that fresh)
REPORT_EVERY_S = 1.0


class SharedState:
    """The replicas' shared state (run as a Ray actor; plain Python otherwise, as in tests).

    Args:
        keep: images (and videos) kept, ``serve.keep_images``.
    """

    def __init__(self, keep: int):
        self.kept = {"image": Kept(keep), "video": Kept(keep)}
        self.loras: dict[str, str] = {}
        self.reports: dict[str, dict] = {}

    def put(self, kind: str, key: str, value: Any) -> None:
        self.kept[kind].put(key, value)

    def get(self, kind: str, key: str) -> Any:
        return self.kept[kind].get(key)

    def pop(self, kind: str, key: str) -> Any:
        return self.kept[kind].pop(key)

    def count(self, kind: str) -> int:
        return len(self.kept[kind])

    def claim_lora(self, name: str, path: str) -> bool:
        if name in self.loras:
            return False
        self.loras[name] = path
        return True

    def release_lora(self, name: str) -> None:
        self.loras.pop(name, None)

    def wanted_loras(self) -> dict[str, str]:
        return dict(self.loras)

    def report(self, replica: str, metrics: dict, queue_depth: int) -> None:
        """A replica's counters and queue depth now (a dead replica's last report stays counted)."""
        self.reports[replica] = {"metrics": metrics, "queue_depth": queue_depth}

    def totals(self) -> tuple[list[dict], int]:
        """Every replica's last counters, and the requests waiting summed over their last reports."""
        return [r["metrics"] for r in self.reports.values()], sum(r["queue_depth"] for r in self.reports.values())


class SharedView:
    """A replica's handle on the :class:`SharedState` actor: stores for the engine, the LoRA
    registry, and its counters sent every :data:`REPORT_EVERY_S` seconds.

    Args:
        actor: the actor's handle (``ray.get_actor(STATE_ACTOR)``).
        replica: this replica's id (Ray Serve's).
        replicas: how many replicas the server runs.
    """

    def __init__(self, actor: Any, replica: str, replicas: int):
        self.actor = actor
        self.replica = replica
        self.replicas = replicas
        self.loras = RemoteLoraRegistry(self)
        self._stop = threading.Event()

    def call(self, method: str, *args: Any) -> Any:
        """``method(*args)`` on the actor, waited for (a local actor answers in about a millisecond)."""
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))

    def kept(self, kind: str) -> "RemoteKept":
        """The shared store of ``kind`` (``image`` or ``video``)."""
        return RemoteKept(self, kind)

    def start_reporting(self, metrics: Metrics, queue_depth: Any) -> None:
        """Send ``metrics`` and ``queue_depth()`` to the actor every :data:`REPORT_EVERY_S` s
        (a daemon thread, until :meth:`close`)."""

        def loop() -> None:
            while not self._stop.wait(REPORT_EVERY_S):
                self.actor.report.remote(self.replica, metrics.snapshot(), queue_depth())

        threading.Thread(target=loop, name="dit_engine-metrics-report", daemon=True).start()

    def metrics_text(self, metrics: Metrics, queue_depth: int) -> str:
        """``/metrics`` for the whole service: every replica's counters summed (this one's now,
        the others' as of their last report, at most :data:`REPORT_EVERY_S` s old; a replica
        that died stays counted as of its last report), the queue depths summed."""
        self.call("report", self.replica, metrics.snapshot(), queue_depth)
        snapshots, depth = self.call("totals")
        return Metrics.merged(snapshots).prometheus(depth)

    def describe(self) -> dict:
        """What ``/health`` adds under replicas."""
        return {"replica": self.replica, "replicas": self.replicas}

    def close(self) -> None:
        self._stop.set()


class RemoteKept:
    """One kind of kept item in the shared state (the :class:`~dit_engine.serve.storage.KeptItems` shape)."""

    def __init__(self, view: SharedView, kind: str):
        self.view = view
        self.kind = kind

    def put(self, key: str, value: Any) -> None:
        self.view.call("put", self.kind, key, value)

    def get(self, key: str) -> Any:
        return self.view.call("get", self.kind, key)

    def pop(self, key: str) -> Any:
        return self.view.call("pop", self.kind, key)

    def __len__(self) -> int:
        return self.view.call("count", self.kind)


class RemoteLoraRegistry:
    """The LoRAs every replica should hold (the :class:`~dit_engine.serve.loras.LoraRegistry` shape)."""

    def __init__(self, view: SharedView):
        self.view = view

    def claim(self, name: str, path: str) -> bool:
        return self.view.call("claim_lora", name, path)

    def release(self, name: str) -> None:
        self.view.call("release_lora", name)

    def wanted(self) -> dict[str, str]:
        return self.view.call("wanted_loras")
