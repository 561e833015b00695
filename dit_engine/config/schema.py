"""Typed schemas of the engine's own config groups and keys, served to Hydra by
:mod:`dit_engine.config.schema_source`; which groups exist is :mod:`dit_engine.config.groups`.

Each YAML option under ``conf/<group>/`` extends one of these schemas (``defaults: [schema_<x>]``),
so a misspelt key or a value of the wrong type fails when Hydra composes the config, before
anything runs. The field docs below are the reference for what each key does.

This module imports neither torch nor any transform: ``--help`` and shell completion compose the
default config with it alone. A technique's schema (its transform's ``config_class``) is imported
only when a composed option uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

#: the embedded model's prompts, its class names (``dit_engine.digits.model.CLASS_NAMES``): here so
#: a config's prompts are checked before torch loads (``dit_engine.early_checks``)
EMBEDDED_PROMPTS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: the embedded model's image side in pixels
EMBEDDED_SIDE = 16


@dataclass
class ModelConfig:
    """Which model to load and where to run it.

    Attributes:
        adapter: entry-point name of the adapter (group ``dit_engine.adapters``) that knows how to
            load this model family and where its transformer blocks are.
        pretrained: a local directory or a Hugging Face hub id passed to the pipeline's
            ``from_pretrained``. ``None`` uses the adapter's default (the embedded weights for
            ``tiny``; required for real models).
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: weights and activations dtype: ``float32``, ``bfloat16`` or ``float16``.
            Half precision is faster on GPU; on CPU keep ``float32``.
        revision: the hub branch, tag or commit of ``pretrained`` (e.g. Bria 3.2's diffusers
            weights live on the branch ``bria_3_2_diffusers``); ``None``: the default branch.
    """

    adapter: str = MISSING
    pretrained: Optional[str] = None
    revision: Optional[str] = None
    device: str = "auto"
    dtype: str = "float32"


@dataclass
class NoneConfig:
    """An empty option: the group adds nothing to the plan."""

    name: str = "none"


@dataclass
class BlockCacheConfig:
    """Settings shared by the block caches (``cache=dbcache``, ``fbcache``, ``scm``, ``teacache``...).

    All transformer block lists of the model are treated as one sequence of N blocks. The first
    ``front_blocks`` (Fn) and the last ``back_blocks`` (Bn) always run; the cache's decision rule
    says when the middle blocks are reused.

    Attributes:
        front_blocks: Fn, blocks always computed at the start; they probe how much the step
            changed. More front blocks: better decisions and quality, less saving.
        back_blocks: Bn, blocks always computed at the end; they refine the reused residual.
            More back blocks: better quality, less saving. Fn + Bn must be below N.
        threshold: the decision rule's threshold (DBCache: relative L1 change of the Fn residual
            below which the middle blocks are reused). 0 never caches (output identical to no
            cache); larger caches more steps, faster and further from the uncached image.
            ``None`` takes the technique's default for the model family (its table, e.g.
            ``dbcache.DBCACHE_THRESHOLDS``; tiny: 0.2, flux: 0.08);
            the plan shows the value used.
        threshold_scale: multiplies the model's default threshold when ``threshold`` is null
            (the presets ``dbcache_fast`` and ``dbcache_slow`` use it); ignored otherwise.
        warmup_steps: the first steps of every request always compute (the trajectory changes
            fastest there).
        max_cached_steps: most cached steps per request and CFG branch; -1 for no limit.
        max_continuous_cached_steps: most cached steps in a row before one full compute; -1 for
            no limit. A small value bounds drift at high thresholds.
        separate_cfg: ``None`` or ``True``: every CFG branch (the k-th transformer call of a
            step) decides on its own; ``False``: later branches follow the first branch's
            decision, so cond and uncond are always computed or cached together. Batched CFG
            (one call per step) is one branch either way.
        per_sample: each sample of a batched call (a prompt's image; with batched CFG, each
            branch's half too) decides on its own, from its own signal, and keeps its own cached
            residuals and forecaster history: the samples that compute run the middle blocks as
            a sub-batch, the others reuse their own residual. A sample's decisions and image
            then do not depend on its batch-mates, so the server batches requests under this
            cache. ``False`` (default): one decision for the whole call.
    """

    front_blocks: int = 1
    back_blocks: int = 0
    threshold: Optional[float] = None
    threshold_scale: float = 1.0
    warmup_steps: int = 2
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1
    separate_cfg: Optional[bool] = None
    per_sample: bool = False

    def value_problems(self) -> list[str]:
        """The settings no model can accept (ranges), each a one-line fix: decided by the config
        alone, so they are reported before torch loads (``dit_engine.early_checks``)."""
        problems = []
        if self.front_blocks < 0 or self.back_blocks < 0:
            problems.append("cache.front_blocks and cache.back_blocks must be 0 or more")
        if self.threshold is not None and not self.threshold >= 0:  # also catches NaN
            problems.append(f"cache.threshold={self.threshold} must be >= 0 (0 disables caching); try cache.threshold=0.08")
        if not self.threshold_scale > 0:
            problems.append(f"cache.threshold_scale={self.threshold_scale} must be > 0")
        if self.warmup_steps < 0:
            problems.append(f"cache.warmup_steps={self.warmup_steps} is negative; use 0 or more")
        for key in ("max_cached_steps", "max_continuous_cached_steps"):
            if getattr(self, key) < -1:
                problems.append(f"cache.{key}={getattr(self, key)}: use -1 (no limit) or a count >= 0")
        return problems


@dataclass
class NoCacheConfig(BlockCacheConfig):
    """``cache=none``: nothing is cached.

    The shared cache settings (:class:`BlockCacheConfig`) are accepted
    and ignored, so that one sweep can cross cache options with their settings
    (``-m cache=none,dbcache cache.threshold=0.05,0.2``).
    """

    def value_problems(self) -> list[str]:
        return []  # ignored settings: any value will do

    name: str = "none"


@dataclass
class WorkloadConfig:
    """What the run generates.

    Attributes:
        name: label of the workload in reports.
        prompts: prompts to generate (for the tiny model: class names). ``None`` uses the model
            adapter's default prompts.
        num_prompts: ``None`` runs every prompt once; N runs N images, cycling through the
            prompts (each image still gets its own seed).
        seed: seed of the generator of the first image; image i uses ``seed + i``.
        num_inference_steps: denoising steps; ``None`` uses the model default.
        guidance_scale: classifier-free guidance scale; ``None`` uses the model default.
        height: image height in pixels; ``None`` uses the model default.
        width: image width in pixels; ``None`` uses the model default.
        batch_size: prompts per pipeline call; 0 puts all prompts in one call.
        warmup: untimed runs of the whole workload before the timed ones (first-call overheads
            out of the numbers).
        repeats: timed runs of the whole workload; latency is their mean.
        call_kwargs: extra keyword arguments passed to the pipeline call as they are
            (e.g. ``+workload.call_kwargs.max_sequence_length=64`` for FLUX on the command line:
            a new key in this dict is added with ``+``).
    """

    name: str = "default"
    prompts: Optional[list[str]] = None
    num_prompts: Optional[int] = None
    seed: int = 0
    num_inference_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    height: Optional[int] = None
    width: Optional[int] = None
    batch_size: int = 0
    warmup: int = 0
    repeats: int = 1
    call_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportConfig:
    """What a run measures and writes next to its images.

    Attributes:
        name: report flavour (``latency`` or ``quality``).
        save_images: write every image as a PNG.
        contact_sheet: write ``contact_sheet.png``, all images in one labelled grid.
        quality: also run the reference (the same workload on the plain pipeline, every
            acceleration off) and record PSNR, SSIM and MAE of every image against it, plus
            the speedup vs the reference. The reference is cached on disk, keyed by model and
            workload, so the cells of a sweep (in any process) share one.
        reference_dir: where references are cached (relative to the working directory).
        reference_timing: ``fresh`` re-times the plain pipeline in this run (side by side with
            the accelerated one, so the speedup is not skewed by another moment's machine load;
            the cached reference images are still the ones compared against); ``interleaved``
            times plain and accelerated runs in turn (``max(workload.repeats, 3)`` pairs, the
            plan removed and applied again between them) and takes the median of the pairs'
            speedups, so a load spike weighs on both sides alike; ``cached`` trusts the latency
            stored with the reference (saves one plain run per cell).
        clock: the clock speedups are computed on: ``auto`` (the process's own CPU time on a CPU,
            CUDA events with a synchronize on a GPU; both hold while other jobs share the
            machine, wall time does not), ``cpu_time``, ``cuda_events`` or ``wall``. Latencies are
            always wall seconds; ``metrics.json`` records the clock's seconds beside them
            (``latency.clock_s``) and names the clock (``quality.speedup_clock``). On a CPU the
            CPU-time clock counts every torch thread: with one intra-op thread
            (``OMP_NUM_THREADS=1``) it is steady under load; with several it also counts their
            spinning, so compare runs with the same thread count.
        clip_model: a local directory with a CLIP model (transformers ``save_pretrained`` format);
            when set, metrics.json gets the CLIP score of every image against its prompt. Never
            downloaded. (LPIPS is not offered: its backbone weights would have to be fetched.)
        profile: write ``trace.json``, a torch.profiler Chrome trace of one denoising step (the
            third transformer call) of one extra request (open it in chrome://tracing or
            Perfetto); ``metrics.json`` records its path and size under ``profile``.
        objective: what the run returns to a Hydra sweeper: ``latency`` (seconds, minimise),
            ``compute`` (the fraction of block forwards computed, minimise, under ``psnr_floor``;
            deterministic, no clock involved: the honest objective for a search on a busy
            machine; needs ``quality``), ``speedup`` (vs the reference, maximise, from
            interleaved plain / accelerated timings; needs ``quality``) or ``psnr``.
        psnr_floor: quality constraint of the ``compute`` and ``speedup`` objectives: a run whose
            mean PSNR is below it scores 0 (``speedup``) or above 1 (``compute``: 1 plus the
            relative shortfall), so an optimiser only keeps configurations that hold the floor.
    """

    name: str = "latency"
    save_images: bool = True
    contact_sheet: bool = True
    quality: bool = False
    reference_dir: str = "outputs/references"
    reference_timing: str = "fresh"
    clock: str = "auto"
    clip_model: Optional[str] = None
    profile: bool = False
    objective: str = "latency"
    psnr_floor: float = 30.0


@dataclass
class ServeConfig:
    """``python -m dit_engine.serve``: the HTTP server (ignored by runs). Every key is checked at
    startup (:func:`dit_engine.serve.settings.serve_problems`): a bad one is one line and exit 2.

    Attributes:
        host: interface to listen on (``0.0.0.0`` for every interface); an IP address or a name
            that resolves.
        port: TCP port, 1 to 65535.
        api_key: when set, requests need ``Authorization: Bearer <api_key>`` (401 otherwise);
            ``null`` (the default) turns authentication off. An empty key is refused.
        max_queue: requests waiting at most (1 or more); a full queue answers 429 with ``Retry-After``.
        max_batch: images run in one pipeline call at most (requests with the same settings
            are batched when the plan's images do not depend on the batch: no cache, a static
            step mask, or a data-driven cache deciding per sample, ``cache.per_sample=true``,
            which the server sets where the cache allows it). 1: no batching.
        batch_wait_ms: how long the first request of a batch waits for others to join it.
        max_images: the largest ``n`` one request may ask for.
        max_body_mb: the largest request body accepted, however it is sent (413 beyond).
        keep_images: images (and videos) kept for ``response_format=url`` (the oldest are dropped).
        max_steps: the largest ``num_inference_steps`` a request may ask for (422 beyond).
        max_side: the largest width or height in pixels a request's ``size`` may ask for (422 beyond).
        max_frames: the largest ``num_frames`` a video request may ask for (422 beyond).
        max_guidance_scale: the largest ``|guidance_scale|`` a request may ask for (422 beyond; at
            most the engine-wide bound, 1000: far beyond, the output overflows to NaN).
        max_prompt_chars: the longest ``prompt`` (and ``negative_prompt``) in characters (422 beyond).
        max_lora_scale: the largest LoRA ``scale`` a request may ask for (422 beyond; at most 100,
            the bound a run's ``lora.scale`` has).
        max_loras: the most LoRA adapters one request may combine (``"lora": [...]``; 422 beyond).
        request_timeout_s: how long a request may wait and run, in seconds; past it the request
            answers 504 and its pipeline call is stopped at the next transformer call, freeing
            the worker. The request body must also arrive within it (408).
        header_timeout_s: a connection whose request headers are not complete within this many
            seconds (after it opened, or after its previous response) is closed.
        keep_alive_s: an idle keep-alive connection is closed after this many seconds.
        max_connections: open connections (and requests in progress) at most; beyond, uvicorn
            answers 503.
        lora_dirs: the directories ``POST /v1/loras`` may load from (paths resolved, symlinks
            followed: nothing outside them). The default is the server's working directory.
        replicas: how many copies of the model serve (1: this process alone). 2 or more deploy
            the app on Ray Serve (the ``serve-ray`` extra): a local Ray instance, or the cluster
            at ``RAY_ADDRESS``; one GPU per replica on CUDA (:mod:`dit_engine.serve.replicas`).
        replica_cpus: CPU cores (and torch threads) of each replica; null: this machine's cores
            divided by ``replicas``, at least 1.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: Optional[str] = None
    max_queue: int = 64
    max_batch: int = 4
    batch_wait_ms: int = 10
    max_images: int = 8
    max_body_mb: float = 16.0
    keep_images: int = 256
    max_steps: int = 200
    max_side: int = 4096
    max_frames: int = 256
    max_guidance_scale: float = 100.0
    max_prompt_chars: int = 4000
    max_lora_scale: float = 10.0
    max_loras: int = 4
    request_timeout_s: float = 300.0
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 256
    lora_dirs: list[str] = field(default_factory=lambda: ["."])
    replicas: int = 1
    replica_cpus: Optional[float] = None


@dataclass
class LoraConfig:
    """A LoRA adapter for the run's transformer (diffusers' loading, through peft).

    Attributes:
        path: a ``.safetensors`` LoRA file (or a folder holding one); ``None``: no LoRA.
        scale: its strength (1: as trained, 0: off).
        name: the adapter's name inside the transformer.
    """

    path: Optional[str] = None
    scale: float = 1.0
    name: str = "lora"


#: The root schema (``defaults: [schema_engine]`` in ``conf/config.yaml``): the dataclass
#: :func:`dit_engine.config.groups.engine_config_class` derives from the table of groups.
ROOT_SCHEMA = "schema_engine"


def is_schema_name(option: object) -> bool:
    """Whether a group option names an internal schema (``schema_dbcache``), not a user option."""
    return isinstance(option, str) and option.startswith("schema_")
