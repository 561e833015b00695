"""Typed schemas of every config group, stored in Hydra's ConfigStore.

Each YAML option under ``conf/<group>/`` extends one of these schemas (``defaults: [schema_<x>]``),
so a misspelt key or a value of the wrong type fails when Hydra composes the config, before
anything runs. The field docs below are the reference for what each key does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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
    """

    adapter: str = MISSING
    pretrained: Optional[str] = None
    device: str = "auto"
    dtype: str = "float32"


@dataclass
class NoneConfig:
    """An empty option: the group adds nothing to the plan."""

    name: str = "none"


@dataclass
class CacheSettings:
    """Settings shared by the block caches (``cache=dbcache``, ``cache=fbcache``).

    All transformer block lists of the model are treated as one sequence of N blocks. The first
    ``front_blocks`` (Fn) and the last ``back_blocks`` (Bn) always run. After Fn, the relative L1
    change of the Fn output residual against the last fully computed step is compared with
    ``threshold``: below it, the middle blocks are skipped and their residual from the last
    computed step is reused.

    Attributes:
        front_blocks: Fn, blocks always computed at the start; they probe how much the step
            changed. More front blocks: better decisions and quality, less saving. At least 1.
        back_blocks: Bn, blocks always computed at the end; they refine the reused residual.
            More back blocks: better quality, less saving. Fn + Bn must be below N.
        threshold: relative L1 change of the Fn residual below which the middle blocks are
            reused. 0 never caches (output identical to no cache); larger caches more steps,
            faster and further from the uncached image. ``None`` takes the model adapter's
            default for this family (tiny: 0.2, flux: 0.08); the plan shows the value used.
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
    """

    front_blocks: int = 1
    back_blocks: int = 0
    threshold: Optional[float] = None
    threshold_scale: float = 1.0
    warmup_steps: int = 2
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1
    separate_cfg: Optional[bool] = None


@dataclass
class NoCacheConfig(CacheSettings):
    """``cache=none``: nothing is cached.

    The shared cache settings are accepted and ignored, so that one sweep can cross cache
    options with their settings (``-m cache=none,dbcache cache.threshold=0.05,0.2``).
    """

    name: str = "none"


@dataclass
class DBCacheConfig(CacheSettings):
    """DBCache: dual-block residual cache (``cache=dbcache``; ``cache=fbcache`` is F1B0).

    Attributes:
        name: transform implementation (``dbcache``); see :class:`CacheSettings` for the rest.
    """

    name: str = "dbcache"


@dataclass
class DBPruneConfig(CacheSettings):
    """DBPrune, dynamic block prune (``cache=dbprune``).

    Every block between the first ``front_blocks`` and the last ``back_blocks`` decides on its
    own: when its input changed less than ``threshold`` (relative L1) since the last step it
    computed, it is skipped and its residual from then is added. ``max_cached_steps`` and
    ``max_continuous_cached_steps`` apply per block. ``separate_cfg`` is not used: every branch
    decides per block.

    Attributes:
        name: transform implementation (``dbprune``).
    """

    name: str = "dbprune"


@dataclass
class SCMConfig(CacheSettings):
    """SCM, steps computation mask (``cache=scm``, ``cache=scm_static``): which steps may cache.

    The mask fixes, per denoising step, whether the step must compute; on the other steps the
    ``dynamic`` policy still applies the DBCache threshold, ``static`` reuses unconditionally
    (then ``front_blocks`` may be 0, and ``skip_level=model`` skips the whole transformer call;
    with ``calibrator=taylorseer`` its output is forecast: step-level forecasting).

    Attributes:
        name: transform implementation (``scm``).
        preset: ``slow``, ``medium``, ``fast`` or ``ultra``: compute about 60 / 40 / 33 / 25 % of
            the steps: the first tenth, then one every fixed stride. Defined relative to the
            number of steps, so one preset serves 8, 28 or 50 steps.
        mask: explicit bit string, ``1`` = compute, ``0`` = may cache (e.g. ``1111010101...``);
            overrides ``preset``. A mask of another length than the step count is resampled
            proportionally (step i of N reads bit floor(i * len / N)).
        policy: ``dynamic`` or ``static`` (see above).
        skip_level: ``blocks`` (cached steps skip the middle blocks) or ``model`` (static policy
            only: a cached step skips the whole transformer call and reuses, or with a
            calibrator forecasts, the model output; front/back blocks are not used).
    """

    name: str = "scm"
    preset: Optional[str] = "medium"
    mask: Optional[str] = None
    policy: str = "dynamic"
    skip_level: str = "blocks"


@dataclass
class TeaCacheConfig(CacheSettings):
    """TeaCache (``cache=teacache``): skip whole steps while the polynomial-rescaled relative L1
    change of the timestep-modulated input, accumulated since the last computed step, stays below
    ``threshold``. The first and last steps always compute.

    Attributes:
        name: transform implementation (``teacache``).
        coefficients: the rescaling polynomial, highest power first. ``None``: from
            ``calibration_file``, else the adapter's published ones (FLUX, the tiny model).
        calibration_file: a ``calibration.json`` written by ``python -m dit_engine cache=calibrate``.
    """

    name: str = "teacache"
    coefficients: Optional[list[float]] = None
    calibration_file: Optional[str] = None


@dataclass
class MagCacheConfig(CacheSettings):
    """MagCache (``cache=magcache``): skip whole steps while the accumulated deviation from 1 of the
    product of the model's residual magnitude ratios stays below ``threshold``; at most
    ``max_continuous_cached_steps`` in a row. The ratio curve is interpolated to the requested
    step count, so one calibration serves any number of steps.

    Attributes:
        name: transform implementation (``magcache``).
        mag_ratios: per-step magnitude ratios; ``None``: from ``calibration_file``, else the
            adapter's (FLUX: MagCache's published curve; the tiny model: its shipped calibration).
        calibration_file: a ``calibration.json`` written by ``python -m dit_engine cache=calibrate``.
        retention_ratio: the first fraction of the steps always computes.
    """

    name: str = "magcache"
    mag_ratios: Optional[list[float]] = None
    calibration_file: Optional[str] = None
    retention_ratio: float = 0.2


@dataclass
class CalibrateConfig:
    """``cache=calibrate``: run uncached and write ``calibration.json`` (TeaCache polynomial,
    MagCache ratio curve) into the run directory.

    Attributes:
        name: transform implementation (``calibrate``).
    """

    name: str = "calibrate"


@dataclass
class TaylorSeerConfig:
    """TaylorSeer calibrator (``calibrator=taylorseer``): forecast instead of reuse.

    On every computed step the cached residual's finite-difference derivatives (over the step
    index) are updated; a cached step then adds the Taylor forecast of the residual instead of the
    stale one. Binds to the installed block cache (``cache=dbcache``, ``fbcache``, ``scm``...).

    Attributes:
        name: transform implementation (``taylorseer``).
        order: highest derivative used, 1-3. Higher follows curved trajectories better but
            amplifies noise between far-apart computed steps.
        warmup: computed steps of history needed before the forecast is used (plain reuse until
            then); at least ``order`` + 1 gives every derivative its data.
    """

    name: str = "taylorseer"
    order: int = 1
    warmup: int = 2


@dataclass
class DiffusersFBCConfig:
    """Peer: diffusers' own FirstBlockCache (``cache=diffusers_fbc``), for side-by-side comparisons.

    Attributes:
        name: transform implementation (``diffusers_fbc``).
        threshold: diffusers' ``FirstBlockCacheConfig.threshold`` (absmean residual difference).
    """

    name: str = "diffusers_fbc"
    threshold: float = 0.05


@dataclass
class DiffusersTaylorSeerConfig:
    """Peer: diffusers' own TaylorSeerCache (``cache=diffusers_taylorseer``), for comparisons.

    Attributes:
        name: transform implementation (``diffusers_taylorseer``).
        cache_interval: full computes every this many steps; forecasts in between.
        disable_cache_before_step: the first steps always compute.
        max_order: Taylor order.
        use_lite_mode: diffusers' lite mode (skip whole blocks, forecast the projections).
    """

    name: str = "diffusers_taylorseer"
    cache_interval: int = 4
    disable_cache_before_step: int = 3
    max_order: int = 1
    use_lite_mode: bool = True


@dataclass
class ABCacheConfig:
    """AB-Cache calibrator (``calibrator=abcache``): Adams-Bashforth style extrapolation.

    On a cached step the residual is extrapolated with the polynomial through the last
    ``order`` + 1 computed values (over the step index). Binds to the installed block cache.

    Attributes:
        name: transform implementation (``abcache``).
        order: polynomial degree, 1-3 (1: linear extrapolation from the last two computes).
        warmup: computed values needed before extrapolating (plain reuse until then); at least 2.
    """

    name: str = "abcache"
    order: int = 1
    warmup: int = 2


@dataclass
class DiffusersMagCacheConfig:
    """Peer: diffusers' own MagCache (``cache=diffusers_magcache``), for comparisons.

    It uses the same magnitude-ratio curve as ``cache=magcache`` (the adapter's), which diffusers
    interpolates to ``num_inference_steps`` by nearest neighbour.

    Attributes:
        name: transform implementation (``diffusers_magcache``).
        threshold: diffusers' ``MagCacheConfig.threshold``.
        max_skip_steps: most skipped steps in a row.
        retention_ratio: the first fraction of the steps always computes.
        num_inference_steps: the step count of the runs (diffusers needs it up front).
    """

    name: str = "diffusers_magcache"
    threshold: float = 0.12
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    num_inference_steps: int = 28


@dataclass
class CacheDiTDBCacheConfig:
    """Peer: cache-dit's own DBCache (``cache=cachedit_dbcache``; needs ``pip install --no-deps cache-dit``).

    Attributes:
        name: transform implementation (``cachedit_dbcache``).
        front_blocks: cache-dit ``Fn_compute_blocks``.
        back_blocks: cache-dit ``Bn_compute_blocks``.
        threshold: cache-dit ``residual_diff_threshold``.
        warmup_steps: cache-dit ``max_warmup_steps``.
        max_cached_steps: cache-dit ``max_cached_steps`` (-1: no limit).
        max_continuous_cached_steps: cache-dit ``max_continuous_cached_steps`` (-1: no limit).
        separate_cfg: cache-dit ``has_separate_cfg`` (it cannot see step boundaries by itself).
    """

    name: str = "cachedit_dbcache"
    front_blocks: int = 1
    back_blocks: int = 0
    threshold: float = 0.2
    warmup_steps: int = 2
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1
    separate_cfg: bool = False


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
            (e.g. ``{max_sequence_length: 64}`` for FLUX).
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
            the cached reference images are still the ones compared against); ``cached`` trusts
            the latency stored with the reference (saves one plain run per cell).
        clip_model: a local directory with a CLIP model (transformers ``save_pretrained`` format);
            when set, metrics.json gets the CLIP score of every image against its prompt. Never
            downloaded. (LPIPS is not offered: its backbone weights would have to be fetched.)
        profile: write ``trace.json``, a torch.profiler Chrome trace of one extra request
            (open it in chrome://tracing or Perfetto).
        objective: what the run returns to a Hydra sweeper: ``latency`` (seconds, minimise),
            ``speedup`` (vs the reference, maximise; needs ``quality``) or ``psnr``.
        psnr_floor: constraint of the ``speedup`` objective: a run whose mean PSNR is below it
            returns 0, so an optimiser only keeps configurations that hold the quality floor.
    """

    name: str = "latency"
    save_images: bool = True
    contact_sheet: bool = True
    quality: bool = False
    reference_dir: str = "outputs/references"
    reference_timing: str = "fresh"
    clip_model: Optional[str] = None
    profile: bool = False
    objective: str = "latency"
    psnr_floor: float = 30.0


@dataclass
class EngineConfig:
    """The whole run: one option per group plus the run switches.

    Attributes:
        dry_run: compose and compile the plan, print it, write ``plan.txt``; load no weights.
        quiet: no progress bars and only warnings in the log.
        blocked: adapter or transform entry-point names that must not be used even if installed
            (e.g. ``[cache.dbcache]``).
    """

    model: Any = MISSING
    cache: Any = MISSING
    calibrator: Any = MISSING
    parallel: Any = MISSING
    quant: Any = MISSING
    compile: Any = MISSING
    workload: Any = MISSING
    report: Any = MISSING
    dry_run: bool = False
    quiet: bool = False
    blocked: list[str] = field(default_factory=list)


#: Group -> {schema name -> dataclass}. Option YAMLs pick theirs with ``defaults: [schema_<x>]``.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"schema_model": ModelConfig},
    "cache": {
        "schema_none": NoCacheConfig,
        "schema_dbcache": DBCacheConfig,
        "schema_dbprune": DBPruneConfig,
        "schema_scm": SCMConfig,
        "schema_teacache": TeaCacheConfig,
        "schema_magcache": MagCacheConfig,
        "schema_calibrate": CalibrateConfig,
        "schema_diffusers_fbc": DiffusersFBCConfig,
        "schema_diffusers_taylorseer": DiffusersTaylorSeerConfig,
        "schema_cachedit_dbcache": CacheDiTDBCacheConfig,
        "schema_diffusers_magcache": DiffusersMagCacheConfig,
    },
    "calibrator": {"schema_none": NoneConfig, "schema_taylorseer": TaylorSeerConfig, "schema_abcache": ABCacheConfig},
    "parallel": {"schema_none": NoneConfig},
    "quant": {"schema_none": NoneConfig},
    "compile": {"schema_none": NoneConfig},
    "workload": {"schema_workload": WorkloadConfig},
    "report": {"schema_report": ReportConfig},
}


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="schema_engine", node=EngineConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=group, name=name, node=node)
