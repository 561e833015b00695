"""The serving engine: one loaded, planned pipeline behind a bounded queue and one worker thread.

Requests are checked against the server's limits (``serve.max_steps``...: HTTP 422) and against
the model like a run's workload (unknown prompts, sizes the model cannot make: a one-line error),
queued (a full queue refuses at once: the server answers 429), and run by one worker thread in
pipeline calls of up to ``serve.max_batch`` images: requests whose settings match (steps, guidance,
size, negative prompt) share a call. Each request has a deadline (``serve.request_timeout_s``): one
that waits past it is dropped, and a running call whose requests all passed theirs (or whose
clients all left, or the server is stopping) is stopped at its next transformer call. Every image
is generated through :func:`dit_engine.run_loop.call_pipeline` with its own seeded generator, as
the CLI does, and the cache state starts afresh at each pipeline call (the engine's step state
opens a new request at ``set_timesteps``), so nothing leaks from one call to the next.

:class:`ServingEngine` puts together the parts, one job each: :mod:`~dit_engine.serve.validation`
(a request's settings and checks), :mod:`~dit_engine.serve.batching` (the queue, deadlines and
worker thread), :mod:`~dit_engine.serve.calls` (a batch as one stoppable pipeline call),
:mod:`~dit_engine.serve.loras` (the LoRA adapters), :mod:`~dit_engine.serve.storage` (images and
videos kept for later requests) and :mod:`~dit_engine.serve.metrics` (the counters).
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

from dit_engine.errors import PlanError
from dit_engine.serve.batching import ImageJob, RequestQueue, batch_invariant
from dit_engine.serve.calls import PipelineCalls
from dit_engine.serve.errors import QueueFullError, ServerStoppingError
from dit_engine.serve.loras import LoraStore
from dit_engine.serve.metrics import Metrics
from dit_engine.serve.runner import PipelineRunner
from dit_engine.serve.settings import serve_problems
from dit_engine.serve.shared import SharedView
from dit_engine.serve.storage import ImageStore, VideoStore
from dit_engine.serve.validation import RequestValidator, Settings
from dit_engine.session import Session


class ServingEngine:
    """Load the session's pipeline, apply its plan once, and serve image requests from a queue.

    Attributes:
        serve: the ``serve.*`` settings.
        batching: whether requests with matching settings share pipeline calls
            (:func:`~dit_engine.serve.batching.batch_invariant` plans only; up to
            ``serve.max_batch`` images per call).
        ranks: how many ranks run every pipeline call (1 without a parallel plan).
        requests: a request's settings and checks (:class:`RequestValidator`).
        queue: the waiting requests and the worker (:class:`RequestQueue`).
        loras: the LoRA adapters (:class:`LoraStore`).
        images, videos: what ``response_format=url`` and ``/v1/videos`` keep.
        metrics: the counters (:class:`Metrics`).
    """

    def __init__(self, session: Session, pipe: Any = None, runner: PipelineRunner | None = None,
                 shared: SharedView | None = None):
        """``session`` prepared (``prepare()``: the pipeline is loaded here), or prepared for
        ``pipe``, a pipeline the caller built (``prepare(pipe)``); or ``runner``, the pipeline
        already loaded and planned (rank 0 of a parallel plan passes one that broadcasts).
        ``shared``: under ``serve.replicas=N``, the state this replica shares with the others
        (kept images and videos, LoRAs, counters); None keeps them in this process.
        PlanError when a ``serve.*`` setting is invalid (before anything is loaded)."""
        problems = serve_problems(session.cfg.serve)
        if problems:
            raise PlanError(problems)
        self.session = session
        self.serve = session.cfg.serve
        self.adapter = session.adapter
        self.runner = runner or PipelineRunner(session, pipe)
        self.pipe = self.runner.pipe
        self.ranks = session.plan.world_size  # every rank runs every pipeline call
        self.batching = self.serve.max_batch > 1 and batch_invariant(session.plan)
        self.metrics = Metrics()
        self.shared = shared
        pipe_lock = threading.Lock()  # a pipeline call, or a LoRA being loaded / deleted
        self.loras = LoraStore(self.serve.lora_dirs, session.cfg.lora, self.runner, pipe_lock,
                               registry=shared.loras if shared else None)
        self.requests = RequestValidator(session, self.serve, self.loras)
        self.requests.check_defaults()
        self.images = ImageStore(self.serve.keep_images, shared.kept("image") if shared else None)
        self.videos = VideoStore(self.serve.keep_images, shared.kept("video") if shared else None)
        self.queue = RequestQueue(self.serve, self.batching)
        if shared is not None:
            shared.start_reporting(self.metrics, self.queue.depth)
        self.calls = PipelineCalls(self.runner, self.requests.workload, self.queue.unwanted, self.metrics, pipe_lock,
                                   stoppable=self.ranks == 1)
        self.queue.start(self.calls.run)

    def model_id(self) -> str:
        """The served model's name: ``model.pretrained``, or the adapter's name."""
        return self.session.cfg.model.pretrained or self.adapter.name

    def takes(self, argument: str) -> bool:
        """Whether the pipeline's call takes ``argument`` (``image`` for edit pipelines)."""
        return argument in inspect.signature(type(self.pipe).__call__).parameters

    @property
    def makes_video(self) -> bool:
        """Whether the pipeline generates videos (its call takes ``num_frames``)."""
        return self.takes("num_frames")

    def metrics_text(self) -> str:
        """``GET /metrics``: the counters in Prometheus' text format (under ``serve.replicas=N``,
        every replica's summed: :meth:`SharedView.metrics_text`)."""
        if self.shared is not None:
            return self.shared.metrics_text(self.metrics, self.queue.depth())
        return self.metrics.prometheus(self.queue.depth())

    def health(self) -> dict:
        """``GET /health``: the model, the queue, whether requests batch, ranks (and, under
        replicas, which replica answers and how many there are)."""
        answer = {"status": "ok", "model": self.model_id(), "queue_depth": self.queue.depth(), "batching": self.batching,
                  "ranks": self.ranks}
        if self.shared is not None:
            answer.update(self.shared.describe())
        return answer

    def submit(self, prompt: str, n: int, seed: int, settings: Settings, on_start: Any = None,
               inputs: dict[str, Any] | None = None) -> ImageJob:
        """Queue a request (checked with ``requests.check``); its job's future gets ``(images,
        stats)``, or RequestTimeoutError past ``serve.request_timeout_s``, or ServerStoppingError.
        QueueFullError when full, ServerStoppingError when the server is shutting down.
        ``inputs`` are extra pipeline arguments of this request alone (an edit's ``image``)."""
        if self.queue.stopping.is_set():
            raise ServerStoppingError("the server is shutting down; retry on another instance")
        job = ImageJob(prompt, n, seed, settings, deadline=time.monotonic() + self.serve.request_timeout_s,
                       on_start=on_start, inputs=inputs)
        try:
            self.queue.put(job)
        except QueueFullError:
            self.metrics.count("rejected")
            raise
        return job

    def submit_video(self, prompt: str, seed: int, settings: Settings, model: str) -> dict:
        """Queue a video; its record (OpenAI's video object) is updated as it runs."""
        record = VideoStore.record(prompt, seed, settings, model)
        future = self.submit(prompt, 1, seed, settings, on_start=lambda: self.videos.update(record, status="in_progress")).future
        self.videos.add(record, future)
        return record

    def stop(self) -> None:
        """Start shutting down: new requests are refused, queued ones dropped, the running call
        stopped at its next transformer call (all answered 503). Only sets an event, so a signal
        handler may call it."""
        self.queue.stopping.set()

    def close(self) -> None:
        """Stop (see :meth:`stop`), end the worker and take the plan off the pipeline. Bounded
        (a few seconds): a pipeline call that cannot be stopped (a parallel plan's) is left to
        the exiting process rather than waited for."""
        self.stop()
        self.queue.close(timeout=3)
        self.calls.close()
        if self.shared is not None:
            self.shared.close()
