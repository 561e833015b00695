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
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dit_engine import run_loop
from dit_engine.errors import DitEngineError, NonFiniteOutputError
from dit_engine.lora import load_lora, non_finite_weight_in_file, unload_lora, use_lora
from dit_engine.plan import parallel_world_size
from dit_engine.session import Session
from dit_engine.workload import MAX_SEED


class QueueFullError(DitEngineError):
    """The request queue is full: retry later (HTTP 429)."""


class BadRequestError(DitEngineError):
    """The request cannot be served by this model (HTTP 400)."""


class LimitError(DitEngineError):
    """A request field outside the server's limits (``serve.max_steps``...), a non-finite number, or
    a LoRA with non-finite weights (HTTP 422)."""


class RequestTimeoutError(DitEngineError):
    """The request waited and ran past ``serve.request_timeout_s`` (HTTP 504)."""


class ServerStoppingError(DitEngineError):
    """The server is shutting down: the request was not run, or was stopped (HTTP 503)."""


class RequestCancelledError(DitEngineError):
    """The request's client went away: nobody waits for the result."""


#: the one answer to every LoRA path the server will not load, whatever the reason (outside
#: ``serve.lora_dirs``, missing, unreadable, not a file...), so the answer tells nothing about
#: files outside the allowed directories
LORA_REFUSED = ("no LoRA the server may load at that path: give a .safetensors file (or a folder holding one) "
                "inside serve.lora_dirs")


@dataclass(frozen=True)
class Settings:
    """What must match for two requests to share a pipeline call."""

    num_inference_steps: int
    guidance_scale: float
    height: int | None
    width: int | None
    negative_prompt: str | None
    num_frames: int | None = None  # video requests
    lora: tuple[str, float] | None = None  # (adapter name, scale)


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


@dataclass
class Metrics:
    """Counters for ``GET /metrics`` (Prometheus text)."""

    requests: dict[str, int] = field(default_factory=lambda: {"ok": 0, "bad_request": 0, "rejected": 0, "error": 0,
                                                              "timeout": 0, "cancelled": 0})
    images: int = 0
    latency_buckets: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
    latency_counts: list[int] = field(default_factory=lambda: [0] * 11)
    latency_sum: float = 0.0
    blocks_computed: int = 0
    blocks_total: int = 0
    steps_cached: int = 0
    steps_total: int = 0

    def observe(self, seconds: float) -> None:
        index = next((i for i, b in enumerate(self.latency_buckets) if seconds <= b), len(self.latency_buckets))
        self.latency_counts[index] += 1
        self.latency_sum += seconds


def batch_invariant(plan: Any) -> bool:
    """Whether an image does not depend on which other requests share its pipeline call: no cache,
    or one whose decisions are a fixed step mask. A cache that decides from the data (DBCache,
    TeaCache...) decides once for the whole batch, so a request batched with others could differ
    from the same request alone: such plans run one request per call."""
    from dit_engine.plan import Stage

    return all(step.stage is not Stage.CACHE or getattr(step.config, "policy", None) == "static" for step in plan.steps)


class PipelineRunner:
    """The loaded, planned pipeline and what the server does to it: generate, load a LoRA, unload
    one. Under a parallel plan every rank holds one and does the same to it in the same order
    (rank 0's broadcasts each call first: :mod:`dit_engine.serve.ranks`)."""

    def __init__(self, session: Session, pipe: Any = None):
        self.session = session
        self.adapter = session.adapter
        if pipe is None:
            pipe = session.load()
        else:
            from dit_engine.workload import resolve_workload

            session.workload = session.workload or resolve_workload(session.cfg.workload, self.adapter)
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.handle = session.apply(self.pipe)

    def generate(self, workload: Any, seeds: list[int], frames: bool, lora: tuple[str, float] | None) -> tuple[list, dict]:
        """One pipeline call of ``workload.prompts`` (cache state afresh); its images (or frames)
        and the handle's summary of it."""
        for transformer in self.adapter.transformers(self.pipe).values():
            use_lora(transformer, *(lora or (None,)))
        self.handle.reset()
        images = run_loop.call_pipeline(self.pipe, self.adapter, workload, workload.prompts, seeds, frames=frames)
        return images, self.handle.summary()

    def load_lora(self, name: str, path: str) -> None:
        for transformer in self.adapter.transformers(self.pipe).values():
            load_lora(transformer, path, name)

    def unload_lora(self, name: str) -> None:
        for transformer in self.adapter.transformers(self.pipe).values():
            unload_lora(transformer, name)

    def close(self) -> None:
        """Take the plan off the pipeline (where it can be taken off)."""
        if not self.session.plan.irreversible_steps():
            self.handle.remove()


class ServingEngine:
    """Load the session's pipeline, apply its plan once, and serve image requests from a queue.

    Attributes:
        batching: whether requests with matching settings share pipeline calls
            (:func:`batch_invariant` plans only; up to ``serve.max_batch`` images per call).
    """

    def __init__(self, session: Session, pipe: Any = None, runner: "PipelineRunner | None" = None):
        """``session`` prepared (``prepare()``: the pipeline is loaded here), or prepared for
        ``pipe``, a pipeline the caller built (``prepare_for(pipe)``); or ``runner``, the pipeline
        already loaded and planned (rank 0 of a parallel plan passes one that broadcasts).
        PlanError when a ``serve.*`` setting is invalid (before anything is loaded)."""
        from dit_engine.errors import PlanError
        from dit_engine.serve.settings import serve_problems

        problems = serve_problems(session.cfg.serve)
        if problems:
            raise PlanError(problems)
        self.session = session
        self.serve = session.cfg.serve
        self.lora_dirs = [Path(os.path.expanduser(folder)).resolve() for folder in self.serve.lora_dirs]
        self.adapter = session.adapter
        self.runner = runner or PipelineRunner(session, pipe)
        self.pipe = self.runner.pipe
        self.ranks = parallel_world_size(session.cfg)  # every rank runs every pipeline call
        self.batching = self.serve.max_batch > 1 and batch_invariant(session.plan)
        self.queue: queue.Queue[ImageJob] = queue.Queue(maxsize=self.serve.max_queue)
        self.held: collections.deque[ImageJob] = collections.deque()  # taken, not batched yet
        self.metrics = Metrics()
        self.lock = threading.Lock()
        self.pipe_lock = threading.Lock()  # a pipeline call, or a LoRA being loaded / deleted
        self.loras: dict[str, str] = {}  # name -> path (POST /v1/loras)
        lora = session.cfg.lora
        self.default_lora = (lora.name, lora.scale) if lora.path is not None else None  # lora.path=: every request's default
        if self.default_lora:
            self.loras[lora.name] = lora.path
        self.images: OrderedDict[str, bytes] = OrderedDict()  # response_format=url
        self.videos: OrderedDict[str, dict] = OrderedDict()  # /v1/videos jobs, newest last
        self._defaults_within_limits()
        self._stop = threading.Event()  # the worker ends
        self.stopping = threading.Event()  # the server shuts down: refuse, drop and stop requests (503)
        self._running: list[ImageJob] = []  # the batch in the pipeline now, read by _stop_check
        # Stopping a call part-way on one rank would leave the others waiting in its collectives, so
        # under a parallel plan a running call always finishes (queued requests are still dropped).
        self._hooks = [transformer.register_forward_pre_hook(self._stop_check)
                       for transformer in self.adapter.transformers(self.pipe).values()] if self.ranks == 1 else []
        self.worker = threading.Thread(target=self._work, name="dit_engine-serve", daemon=True)
        self.worker.start()

    # -- requests -------------------------------------------------------------------------

    def model_id(self) -> str:
        return self.session.cfg.model.pretrained or self.adapter.name

    def settings(self, *, steps: int | None, guidance: float | None, size: tuple[int, int] | None,
                 negative_prompt: str | None, num_frames: int | None = None,
                 lora: tuple[str, float] | None = None) -> Settings:
        """A request's settings, the workload's defaults filled in (checked by :meth:`check`)."""
        w = self.session.workload
        height, width = (size[1], size[0]) if size else (w.height, w.width)
        return Settings(steps if steps is not None else w.num_inference_steps,
                        guidance if guidance is not None else w.guidance_scale, height, width, negative_prompt, num_frames,
                        lora if lora is not None else self.default_lora)

    def check_limits(self, prompt: str, settings: Settings, n: int = 1, seed: int = 0) -> None:
        """LimitError (HTTP 422) naming the limit and its setting when a field is out of bounds or
        not a finite number: nothing absurd (10^9 steps, a guidance of 1e308) reaches the queue."""
        serve = self.serve
        if not 1 <= n <= serve.max_images:
            raise LimitError(f"n={n}: ask for 1 to {serve.max_images} images (serve.max_images)")
        if not 0 <= seed <= MAX_SEED - (n - 1):  # image i is seeded seed + i
            raise LimitError(f"seed={seed}: give 0 to {MAX_SEED - (n - 1)}")
        for field_name, text in (("prompt", prompt), ("negative_prompt", settings.negative_prompt or "")):
            if len(text) > serve.max_prompt_chars:
                raise LimitError(f"{field_name} is {len(text)} characters; the limit is {serve.max_prompt_chars} "
                                 "(serve.max_prompt_chars)")
        if not 1 <= settings.num_inference_steps <= serve.max_steps:
            raise LimitError(f"num_inference_steps={settings.num_inference_steps}: ask for 1 to {serve.max_steps} "
                             "(serve.max_steps)")
        guidance = settings.guidance_scale
        if guidance is not None and not (math.isfinite(guidance) and abs(guidance) <= serve.max_guidance_scale):
            raise LimitError(f"guidance_scale={guidance}: give a finite number within ±{serve.max_guidance_scale:g} "
                             "(serve.max_guidance_scale)")
        for side in (settings.width, settings.height):
            if side is not None and side > serve.max_side:
                raise LimitError(f"size={settings.width}x{settings.height}: each side is at most {serve.max_side} pixels "
                                 "(serve.max_side)")
        if settings.num_frames is not None and not 1 <= settings.num_frames <= serve.max_frames:
            raise LimitError(f"num_frames={settings.num_frames}: ask for 1 to {serve.max_frames} (serve.max_frames)")
        if settings.lora is not None:
            scale = settings.lora[1]
            if not (math.isfinite(scale) and 0 <= scale <= serve.max_lora_scale):
                raise LimitError(f"lora scale={scale}: give a finite number from 0 to {serve.max_lora_scale:g} "
                                 "(serve.max_lora_scale)")

    def _defaults_within_limits(self) -> None:
        """A request that names no steps, guidance or size gets the workload's: they must be within
        the limits too, or every such request would be refused."""
        try:
            self.check_limits("", self.settings(steps=None, guidance=None, size=None, negative_prompt=None))
        except LimitError as err:
            raise DitEngineError(f"the workload's defaults are outside the server's limits: {err}; "
                                 "raise the setting or change the workload") from None

    # -- LoRA adapters (loaded and switched between pipeline calls, under the pipeline lock) ----

    def load_lora(self, name: str, path: str) -> None:
        """Load the LoRA at ``path`` (inside ``serve.lora_dirs``) as ``name``. BadRequestError
        (HTTP 400): :data:`LORA_REFUSED` for any path it may not load, or why the file does not fit
        the model; LimitError (HTTP 422): weights that are NaN or infinite."""
        if name in self.loras:
            raise BadRequestError(f"lora {name!r} is already loaded; DELETE /v1/loras/{name} first or pick another name")
        weights = self._lora_file(path)
        _check_finite_weights(weights)
        with self.pipe_lock:
            try:
                self.runner.load_lora(name, str(weights))
            except DitEngineError as err:
                raise BadRequestError(str(err)) from None
            self.loras[name] = path

    def _lora_file(self, path: str) -> Path:
        """The ``.safetensors`` file ``path`` names (or the first in the folder it names), symlinks
        resolved, when it lies inside ``serve.lora_dirs`` and is readable; else BadRequestError
        with the one message :data:`LORA_REFUSED`."""

        def allowed(candidate: Path) -> bool:
            return any(candidate.is_relative_to(folder) for folder in self.lora_dirs)

        try:
            resolved = Path(os.path.expanduser(path)).resolve()
            if allowed(resolved) and resolved.is_dir():  # nothing outside is looked into
                resolved = next(iter(sorted(resolved.glob("*.safetensors"))), resolved).resolve()
            if allowed(resolved) and resolved.is_file() and os.access(resolved, os.R_OK):
                return resolved
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte in the path...
            pass
        raise BadRequestError(LORA_REFUSED)

    def unload_lora(self, name: str) -> bool:
        with self.pipe_lock:
            if self.loras.pop(name, None) is None:
                return False
            self.runner.unload_lora(name)
            return True

    def takes(self, argument: str) -> bool:
        """Whether the pipeline's call takes ``argument`` (``image`` for edit pipelines)."""
        import inspect

        return argument in inspect.signature(type(self.pipe).__call__).parameters

    @property
    def makes_video(self) -> bool:
        """Whether the pipeline generates videos (its call takes ``num_frames``)."""
        return self.takes("num_frames")

    def check(self, prompt: str, settings: Settings, n: int = 1, seed: int = 0) -> None:
        """A request's checks before it is queued: the server's limits (LimitError, HTTP 422), its
        LoRA loaded, and the model's own checks of a workload with this prompt and these settings
        (BadRequestError, HTTP 400)."""
        self.check_limits(prompt, settings, n, seed)
        if settings.lora is not None and settings.lora[0] not in self.loras:
            known = ", ".join(self.loras) or "none loaded"
            raise BadRequestError(f"lora {settings.lora[0]!r} is not loaded ({known}); load it with POST /v1/loras")
        workload = self._workload(settings, [prompt])
        problems = self.adapter.check(self.session.cfg.model, workload, dry_run=True) + workload.problems()
        if problems:
            problem = problems[0]
            if problem.startswith(("workload.height", "workload.width")):  # say it in the request's terms
                problem = f"size={settings.width}x{settings.height} cannot be generated: {problem.split(': ', 1)[-1]}"
            raise BadRequestError(problem)

    def submit(self, prompt: str, n: int, seed: int, settings: Settings, on_start: Any = None,
               inputs: dict[str, Any] | None = None) -> ImageJob:
        """Queue a request; its job's future gets ``(images, stats)``, or RequestTimeoutError past
        ``serve.request_timeout_s``, or ServerStoppingError. QueueFullError when full,
        ServerStoppingError when the server is shutting down. ``inputs`` are extra pipeline
        arguments of this request alone (an edit's ``image``)."""
        if self.stopping.is_set():
            raise ServerStoppingError("the server is shutting down; retry on another instance")
        job = ImageJob(prompt, n, seed, settings, deadline=time.monotonic() + self.serve.request_timeout_s,
                       on_start=on_start, inputs=inputs)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            with self.lock:
                self.metrics.requests["rejected"] += 1
            raise QueueFullError(f"the request queue is full ({self.serve.max_queue} waiting); retry shortly") from None
        return job

    def submit_video(self, prompt: str, seed: int, settings: Settings, model: str) -> dict:
        """Queue a video; its record (OpenAI's video object) is updated as it runs."""
        video_id = f"video_{uuid.uuid4().hex}"
        record = {"id": video_id, "object": "video", "status": "queued", "progress": 0, "created_at": int(time.time()),
                  "completed_at": None, "model": model, "prompt": prompt, "seed": seed, "error": None,
                  "size": f"{settings.width}x{settings.height}" if settings.width else None, "num_frames": settings.num_frames}
        future = self.submit(prompt, 1, seed, settings, on_start=lambda: record.update(status="in_progress")).future
        with self.lock:
            self.videos[video_id] = record
            while len(self.videos) > self.serve.keep_images:
                self.videos.popitem(last=False)
        future.add_done_callback(lambda done: self._video_done(record, done))
        return record

    def _video_done(self, record: dict, done: Future) -> None:
        with self.lock:
            if done.exception() is not None:
                record.update(status="failed", error={"message": str(done.exception()).splitlines()[0]})
                return
            (frames,), stats = done.result()
            buffer = io.BytesIO()
            frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:], duration=62, loop=0)
            record.update(status="completed", progress=100, completed_at=int(time.time()), dit_engine=stats)
            record["_content"] = buffer.getvalue()

    def queue_depth(self) -> int:
        return self.queue.qsize() + len(self.held)

    def count(self, status: str) -> None:
        with self.lock:
            self.metrics.requests[status] = self.metrics.requests.get(status, 0) + 1

    def keep_image(self, image_id: str, png: bytes) -> None:
        with self.lock:
            self.images[image_id] = png
            while len(self.images) > self.serve.keep_images:
                self.images.popitem(last=False)

    # -- the worker -----------------------------------------------------------------------

    def _workload(self, settings: Settings, prompts: list[str]):
        w = self.session.workload
        call_kwargs = dict(w.call_kwargs)
        if settings.negative_prompt is not None:
            call_kwargs["negative_prompt"] = [settings.negative_prompt] * len(prompts)
        if settings.num_frames is not None:
            call_kwargs["num_frames"] = settings.num_frames
        return dataclasses.replace(w, prompts=prompts, num_inference_steps=settings.num_inference_steps,
                                   guidance_scale=settings.guidance_scale, height=settings.height,
                                   width=settings.width, call_kwargs=call_kwargs)

    def _take(self, timeout: float) -> ImageJob | None:
        """The next request still wanted (past-deadline, cancelled ones are failed on the way)."""
        while True:
            if self.held:
                job = self.held.popleft()
            else:
                try:
                    job = self.queue.get(timeout=timeout)
                except queue.Empty:
                    return None
            reason = self.unwanted(job, time.monotonic())
            if reason is None:
                return job
            job.future.set_exception(reason)

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

    def _stop_check(self, module: Any, args: Any) -> None:
        """Before each transformer call: stop the pipeline call (raise) when no request of the
        running batch still wants it. Installed once on every transformer (a no-op between calls)."""
        batch, now = self._running, time.monotonic()
        reasons = [self.unwanted(job, now) for job in batch]
        if batch and all(reason is not None for reason in reasons):
            raise reasons[0]

    def _next_batch(self) -> list[ImageJob] | None:
        """The oldest request and the waiting ones that can share its pipeline call."""
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

    def _work(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                self._run(batch)

    def _run(self, batch: list[ImageJob]) -> None:
        prompts = [job.prompt for job in batch for _ in range(job.n)]
        seeds = [job.seed + i for job in batch for i in range(job.n)]
        workload = self._workload(batch[0].settings, prompts)
        if batch[0].inputs:  # one request alone (see _next_batch)
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
                job.future.set_exception(BadRequestError(f"generation failed: {first}") if isinstance(err, (ValueError, TypeError))
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
        with self.lock:
            m = self.metrics
            m.images += len(prompts)
            m.blocks_computed += summary.get("blocks_computed", 0)
            m.blocks_total += summary.get("blocks_total", 0)
            m.steps_cached += summary.get("steps_cached", 0)
            m.steps_total += summary.get("steps_total", 0)
        start = 0
        for job in batch:
            job.future.set_result((images[start:start + job.n], {**stats, "queue_s": started - job.enqueued}))
            start += job.n

    def stop(self) -> None:
        """Start shutting down: new requests are refused, queued ones dropped, the running call
        stopped at its next transformer call (all answered 503). Only sets an event, so a signal
        handler may call it."""
        self.stopping.set()

    def close(self) -> None:
        """Stop (see :meth:`stop`), end the worker and take the plan off the pipeline. Bounded
        (a few seconds): a pipeline call that cannot be stopped (a parallel plan's) is left to
        the exiting process rather than waited for."""
        self.stop()
        self._stop.set()
        self.worker.join(timeout=3)
        for hook in self._hooks:
            hook.remove()
        if self.pipe_lock.acquire(timeout=2):
            try:
                self.runner.close()
            finally:
                self.pipe_lock.release()

    def prometheus(self) -> str:
        """The counters in Prometheus' text format."""
        with self.lock:
            m = self.metrics
            lines = ["# HELP dit_engine_requests_total Image requests by outcome.", "# TYPE dit_engine_requests_total counter"]
            lines += [f'dit_engine_requests_total{{status="{status}"}} {count}' for status, count in m.requests.items()]
            lines += ["# HELP dit_engine_images_total Images generated.", "# TYPE dit_engine_images_total counter",
                      f"dit_engine_images_total {m.images}",
                      "# HELP dit_engine_request_latency_seconds Time from request to response.",
                      "# TYPE dit_engine_request_latency_seconds histogram"]
            cumulative = 0
            for bound, count in zip([*m.latency_buckets, float("inf")], m.latency_counts):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'dit_engine_request_latency_seconds_bucket{{le="{le}"}} {cumulative}')
            lines += [f"dit_engine_request_latency_seconds_sum {m.latency_sum:.6f}",
                      f"dit_engine_request_latency_seconds_count {cumulative}",
                      "# HELP dit_engine_queue_depth Requests waiting.", "# TYPE dit_engine_queue_depth gauge",
                      f"dit_engine_queue_depth {self.queue_depth()}",
                      "# HELP dit_engine_cache_hit_ratio Cached steps over all steps since start.",
                      "# TYPE dit_engine_cache_hit_ratio gauge",
                      f"dit_engine_cache_hit_ratio {m.steps_cached / m.steps_total if m.steps_total else 0.0:.6f}",
                      "# HELP dit_engine_compute_fraction Block forwards computed over block forwards of an uncached run.",
                      "# TYPE dit_engine_compute_fraction gauge",
                      f"dit_engine_compute_fraction {m.blocks_computed / m.blocks_total if m.blocks_total else 1.0:.6f}"]
        return "\n".join(lines) + "\n"


def _check_finite_weights(path: Path) -> None:
    """LimitError when a tensor of the safetensors file at ``path`` holds NaN or Inf: such a LoRA
    turns every image it touches flat black (checked before the ranks are told to load it)."""
    bad = non_finite_weight_in_file(path)
    if bad is not None:
        raise LimitError(f"the LoRA's weight {bad} holds NaN or infinite values; it would make every image "
                         "black: re-export it from a good checkpoint")
