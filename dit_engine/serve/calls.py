"""One batch of requests run as one pipeline call, and stopped when nobody waits for it.

Every image is generated through :func:`dit_engine.run_loop.call_pipeline` with its own seeded
generator, as the CLI does; the cache state starts afresh at each call. A pre-hook on every
transformer stops a running call (at its next transformer call) whose requests all passed their
deadline, whose clients all left, or whose server is stopping. Each request's future gets its
images and what the call measured, or the one error that answers it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

from dit_engine.errors import DitEngineError, NonFiniteOutputError
from dit_engine.serve.batching import ImageJob
from dit_engine.serve.errors import BadRequestError, RequestCancelledError, RequestTimeoutError, ServerStoppingError
from dit_engine.serve.metrics import Metrics
from dit_engine.serve.runner import PipelineRunner
from dit_engine.serve.validation import Settings
from dit_engine.workload import Workload


class PipelineCalls:
    """Runs batches on ``runner``'s pipeline under ``pipe_lock``, one at a time."""

    def __init__(self, runner: PipelineRunner, workload: Callable[[Settings, list[str]], Workload],
                 unwanted: Callable[[ImageJob, float], DitEngineError | None], metrics: Metrics,
                 pipe_lock: threading.Lock, stoppable: bool):
        """``workload(settings, prompts)``: a call's workload; ``unwanted(job, now)``: why a job
        must not go on running, or None; ``stoppable``: whether a running call may be stopped
        part-way (not under a parallel plan: stopping it on one rank would leave the others
        waiting in its collectives, so there a running call always finishes)."""
        self.runner = runner
        self.workload = workload
        self.unwanted = unwanted
        self.metrics = metrics
        self.pipe_lock = pipe_lock
        self._running: list[ImageJob] = []  # the batch in the pipeline now, read by _stop_check
        self._hooks = [transformer.register_forward_pre_hook(self._stop_check)
                       for transformer in runner.adapter.transformers(runner.pipe).values()] if stoppable else []

    def run(self, batch: list[ImageJob]) -> None:
        """Run ``batch`` as one pipeline call and answer each job's future."""
        prompts = [job.prompt for job in batch for _ in range(job.n)]
        seeds = [job.seed + i for job in batch for i in range(job.n)]
        workload = self.workload(batch[0].settings, prompts)
        if batch[0].inputs:  # one request alone (see RequestQueue._next_batch)
            workload = dataclasses.replace(workload, call_kwargs={**workload.call_kwargs, **batch[0].inputs})
        started = time.perf_counter()
        for job in batch:
            if job.on_start is not None:
                job.on_start()
        try:
            with self.pipe_lock:
                self._running = batch
                try:
                    images, summary = self.runner.generate(workload, seeds, batch[0].settings.num_frames is not None,
                                                           batch[0].settings.lora)
                finally:
                    self._running = []
        except (RequestTimeoutError, ServerStoppingError, RequestCancelledError) as err:  # stopped by _stop_check
            for job in batch:
                job.future.set_exception(self.unwanted(job, time.monotonic()) or err)
            return
        except NonFiniteOutputError as err:  # the call's one-line cause, as it is
            for job in batch:
                job.future.set_exception(err)
            return
        except Exception as err:  # the request fails, the server keeps serving
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            for job in batch:
                job.future.set_exception(BadRequestError(f"generation failed: {first}") if isinstance(err, (ValueError, TypeError, DitEngineError))
                                         else RuntimeError(f"generation failed: {first}"))
            return
        seconds = time.perf_counter() - started
        stats = {
            "latency_s": seconds,
            "batch_images": len(prompts),
            "compute_fraction": summary["compute_fraction"],
            "cache_hit_ratio": summary["hit_ratio"],
            "steps_cached": summary["steps_cached"],
        }
        parallel = next((t for t in summary["transforms"].values() if "world_size" in t), None)
        if parallel is not None:  # every rank ran this call; rank 0 counted its collectives
            stats.update(ranks=parallel["world_size"], collective_calls=parallel["collective_calls"])
        self.metrics.record_call(len(prompts), summary)
        start = 0
        for job in batch:
            job.future.set_result((images[start:start + job.n], {**stats, "queue_s": started - job.enqueued}))
            start += job.n

    def _stop_check(self, module: Any, args: Any) -> None:
        """Before each transformer call: stop the pipeline call (raise) when no request of the
        running batch still wants it. Installed once on every transformer (a no-op between calls)."""
        batch, now = self._running, time.monotonic()
        reasons = [self.unwanted(job, now) for job in batch]
        if batch and all(reason is not None for reason in reasons):
            raise reasons[0]

    def close(self) -> None:
        """Remove the stop hooks and take the plan off the pipeline, waiting at most 2 s for a
        running call (one that cannot be stopped is left to the exiting process)."""
        for hook in self._hooks:
            hook.remove()
        if self.pipe_lock.acquire(timeout=2):
            try:
                self.runner.close()
            finally:
                self.pipe_lock.release()
