"""The serving engine: one loaded, planned pipeline behind a bounded queue and one worker thread.

Requests are checked against the model like a run's workload (unknown prompts, sizes the model
cannot make: a one-line error), queued (a full queue refuses at once: the server answers 429),
and run by one worker thread in pipeline calls of up to ``serve.max_batch`` images: requests whose
settings match (steps, guidance, size, negative prompt) share a call. Every image is generated
through :func:`dit_engine.run_loop.call_pipeline` with its own seeded generator, as the CLI does,
and the cache state starts afresh at each pipeline call (the engine's step state opens a new
request at ``set_timesteps``), so nothing leaks from one call to the next.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import queue
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from dit_engine import run_loop
from dit_engine.errors import DitEngineError
from dit_engine.lora import load_lora, unload_lora, use_lora
from dit_engine.plan import parallel_world_size
from dit_engine.session import Session


class QueueFullError(DitEngineError):
    """The request queue is full: retry later (HTTP 429)."""


class BadRequestError(DitEngineError):
    """The request cannot be served by this model (HTTP 400)."""


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
    future: Future = field(default_factory=Future)
    on_start: Any = None  # called when the worker takes it (videos: status in_progress)
    inputs: dict[str, Any] | None = None  # per-request pipeline inputs (an edit's image): never batched
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class Metrics:
    """Counters for ``GET /metrics`` (Prometheus text)."""

    requests: dict[str, int] = field(default_factory=lambda: {"ok": 0, "bad_request": 0, "rejected": 0, "error": 0})
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
        already loaded and planned (rank 0 of a parallel plan passes one that broadcasts)."""
        self.session = session
        self.serve = session.cfg.serve
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
        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._work, name="dit_engine-serve", daemon=True)
        self.worker.start()

    # -- requests -------------------------------------------------------------------------

    def model_id(self) -> str:
        return self.session.cfg.model.pretrained or self.adapter.name

    def settings(self, *, steps: int | None, guidance: float | None, size: tuple[int, int] | None,
                 negative_prompt: str | None, num_frames: int | None = None,
                 lora: tuple[str, float] | None = None) -> Settings:
        w = self.session.workload
        height, width = (size[1], size[0]) if size else (w.height, w.width)
        lora = lora if lora is not None else self.default_lora
        if lora is not None and lora[0] not in self.loras:
            known = ", ".join(self.loras) or "none loaded"
            raise BadRequestError(f"lora {lora[0]!r} is not loaded ({known}); load it with POST /v1/loras")
        if lora is not None and not lora[1] >= 0:
            raise BadRequestError(f"lora scale {lora[1]} must be >= 0")
        return Settings(steps if steps is not None else w.num_inference_steps,
                        guidance if guidance is not None else w.guidance_scale, height, width, negative_prompt, num_frames,
                        lora)

    # -- LoRA adapters (loaded and switched between pipeline calls, under the pipeline lock) ----

    def load_lora(self, name: str, path: str) -> None:
        if name in self.loras:
            raise BadRequestError(f"lora {name!r} is already loaded; DELETE /v1/loras/{name} first or pick another name")
        with self.pipe_lock:
            try:
                self.runner.load_lora(name, path)
            except DitEngineError as err:
                raise BadRequestError(str(err)) from None
            self.loras[name] = path

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

    def check(self, prompt: str, settings: Settings) -> None:
        """The model's own checks of a workload with this prompt and these settings."""
        workload = self._workload(settings, [prompt])
        problems = self.adapter.check(self.session.cfg.model, workload, dry_run=True) + workload.problems()
        if problems:
            problem = problems[0]
            if problem.startswith(("workload.height", "workload.width")):  # say it in the request's terms
                problem = f"size={settings.width}x{settings.height} cannot be generated: {problem.split(': ', 1)[-1]}"
            raise BadRequestError(problem)

    def submit(self, prompt: str, n: int, seed: int, settings: Settings, on_start: Any = None,
               inputs: dict[str, Any] | None = None) -> Future:
        """Queue a request; its future gets ``(images, stats)``. QueueFullError when full.
        ``inputs`` are extra pipeline arguments of this request alone (an edit's ``image``)."""
        job = ImageJob(prompt, n, seed, settings, on_start=on_start, inputs=inputs)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            with self.lock:
                self.metrics.requests["rejected"] += 1
            raise QueueFullError(f"the request queue is full ({self.serve.max_queue} waiting); retry shortly") from None
        return job.future

    def submit_video(self, prompt: str, seed: int, settings: Settings, model: str) -> dict:
        """Queue a video; its record (OpenAI's video object) is updated as it runs."""
        video_id = f"video_{uuid.uuid4().hex}"
        record = {"id": video_id, "object": "video", "status": "queued", "progress": 0, "created_at": int(time.time()),
                  "completed_at": None, "model": model, "prompt": prompt, "seed": seed, "error": None,
                  "size": f"{settings.width}x{settings.height}" if settings.width else None, "num_frames": settings.num_frames}
        future = self.submit(prompt, 1, seed, settings, on_start=lambda: record.update(status="in_progress"))
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
        if self.held:
            return self.held.popleft()
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

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
                images, summary = self.runner.generate(workload, seeds, batch[0].settings.num_frames is not None,
                                                       batch[0].settings.lora)
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

    def close(self) -> None:
        self._stop.set()
        self.worker.join(timeout=5)
        with self.pipe_lock:
            self.runner.close()

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
