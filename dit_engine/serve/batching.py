"""The bounded request queue and its worker thread: requests wait in a queue of ``serve.max_queue``
(a full queue refuses at once), each with a deadline (``serve.request_timeout_s``); one worker
thread takes the oldest request still wanted, with the waiting ones whose settings match, up to
``serve.max_batch`` images, and hands the batch to one pipeline call.
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from dit_engine.errors import DitEngineError
from dit_engine.config.groups import Stage
from dit_engine.plan import Plan
from dit_engine.transforms.protocols import BatchInvariant
from dit_engine.serve.errors import QueueFullError, RequestCancelledError, RequestTimeoutError, ServerStoppingError
from dit_engine.serve.validation import Settings


@dataclass
class ImageJob:
    """One request: ``n`` images of one prompt, seeds ``seed``, ``seed + 1``..."""

    prompt: str
    n: int
    seed: int
    settings: Settings
    deadline: float = math.inf  # time.monotonic() past which the request is dropped or stopped
    future: Future = field(default_factory=Future)
    on_start: Any = None  # called when the worker takes it (videos: status in_progress)
    inputs: dict[str, Any] | None = None  # per-request pipeline inputs (an edit's image): never batched
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)  # its client went away

    def cancel(self) -> None:
        """Nobody waits for it any more: drop it, or stop its pipeline call when no batch-mate waits."""
        self.cancelled.set()


def batch_invariant(plan: Plan) -> bool:
    """Whether an image does not depend on which other requests share its pipeline call: no cache,
    or one whose decisions are a fixed step mask. A cache that decides from the data (DBCache,
    TeaCache...) decides once for the whole batch, so a request batched with others could differ
    from the same request alone: such plans run one request per call."""
    return all(step.stage is not Stage.CACHE
               or (isinstance(step.transform_class, BatchInvariant) and step.transform_class.batch_invariant(step.config))
               for step in plan.steps)


class RequestQueue:
    """The queue of waiting jobs, why a job is no longer wanted, and the worker thread that takes
    them in batches.

    Attributes:
        stopping: set when the server shuts down: new jobs are refused, queued ones dropped and
            running ones stopped (HTTP 503).
    """

    def __init__(self, serve: Any, batching: bool):
        """``serve``: the ``serve.*`` settings; ``batching``: whether jobs with matching settings
        may share a pipeline call."""
        self.serve = serve
        self.batching = batching
        self.waiting: queue.Queue[ImageJob] = queue.Queue(maxsize=serve.max_queue)
        self.held: collections.deque[ImageJob] = collections.deque()  # taken, not batched yet
        self.stopping = threading.Event()
        self._closed = threading.Event()  # the worker ends
        self._worker: threading.Thread | None = None

    def put(self, job: ImageJob) -> None:
        """Queue ``job``; QueueFullError when ``serve.max_queue`` jobs wait already."""
        try:
            self.waiting.put_nowait(job)
        except queue.Full:
            raise QueueFullError(f"the request queue is full ({self.serve.max_queue} waiting); retry shortly") from None

    def depth(self) -> int:
        """How many jobs wait."""
        return self.waiting.qsize() + len(self.held)

    def unwanted(self, job: ImageJob, now: float | None = None) -> DitEngineError | None:
        """Why ``job`` must not run (or go on running), or None."""
        now = time.monotonic() if now is None else now
        if self.stopping.is_set():
            return ServerStoppingError("the server is shutting down; the request was not finished")
        if now > job.deadline:
            return RequestTimeoutError(f"the request took longer than serve.request_timeout_s={self.serve.request_timeout_s:g} s "
                                       "(waiting and running); ask for fewer steps or a smaller size, or retry later")
        if job.cancelled.is_set():
            return RequestCancelledError("the client went away")
        return None

    def start(self, run: Callable[[list[ImageJob]], None]) -> None:
        """Start the worker thread: it passes each batch to ``run`` until :meth:`close`."""
        self._worker = threading.Thread(target=self._work, args=(run,), name="dit_engine-serve", daemon=True)
        self._worker.start()

    def close(self, timeout: float) -> None:
        """End the worker, waiting up to ``timeout`` seconds for the batch it runs."""
        self._closed.set()
        if self._worker is not None:
            self._worker.join(timeout=timeout)

    def _work(self, run: Callable[[list[ImageJob]], None]) -> None:
        while not self._closed.is_set():
            batch = self._next_batch()
            if batch:
                run(batch)

    def _take(self, timeout: float) -> ImageJob | None:
        """The next job still wanted (past-deadline, cancelled ones are failed on the way)."""
        while True:
            if self.held:
                job = self.held.popleft()
            else:
                try:
                    job = self.waiting.get(timeout=timeout)
                except queue.Empty:
                    return None
            reason = self.unwanted(job, time.monotonic())
            if reason is None:
                return job
            job.future.set_exception(reason)

    def _next_batch(self) -> list[ImageJob] | None:
        """The oldest job and the waiting ones that can share its pipeline call."""
        first = self._take(timeout=0.2)
        if first is None:
            return None
        batch, images = [first], first.n
        deadline = time.perf_counter() + self.serve.batch_wait_ms / 1000
        passed_over = []
        while self.batching and first.inputs is None and images < self.serve.max_batch:
            job = self._take(timeout=max(0.0, deadline - time.perf_counter()))
            if job is None:
                break
            if job.settings == first.settings and job.inputs is None and images + job.n <= self.serve.max_batch:
                batch.append(job)
                images += job.n
            else:
                passed_over.append(job)
        self.held.extendleft(reversed(passed_over))  # first in line for the next call, in order
        return batch
