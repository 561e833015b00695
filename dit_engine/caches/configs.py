"""The caches' config dataclasses (the ``cache=`` schemas) and the enums they use.

Torch-free: Hydra composes (and ``--help``, shell completion and the config checks read) these
schemas without importing torch; the transforms that use them import them from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

from dit_engine.config.schema import BlockCacheConfig

class Preset(enum.StrEnum):
    """``cache.preset``: a share of steps computed (:data:`PRESET_FRACTIONS`)."""

    slow = "slow"
    medium = "medium"
    fast = "fast"
    ultra = "ultra"


class Policy(enum.StrEnum):
    """``cache.policy``: what a step the mask lets cache does (see :class:`SCMConfig`)."""

    dynamic = "dynamic"
    static = "static"
    adaptive = "adaptive"


class Layout(enum.StrEnum):
    """``cache.layout``: how a budget's computes are spaced (see :class:`SCMConfig`)."""

    steps = "steps"
    sigmas = "sigmas"


class SkipLevel(enum.StrEnum):
    """``cache.skip_level``: what a cached step skips (see :class:`SCMConfig`)."""

    blocks = "blocks"
    model = "model"


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
class DiffusersMagCacheConfig:
    """Peer: diffusers' own MagCache (``cache=diffusers_magcache``), for comparisons.

    It uses the same magnitude-ratio curve as ``cache=magcache`` (the adapter's), which diffusers
    interpolates to ``num_inference_steps`` by nearest neighbour.

    Attributes:
        name: transform implementation (``diffusers_magcache``).
        threshold: diffusers' ``MagCacheConfig.threshold``.
        max_skip_steps: most skipped steps in a row.
        retention_ratio: the first fraction of the steps always computes.
        num_inference_steps: the step count of the runs (diffusers needs it up front); ``None``
            takes the workload's on the command line; with ``dit_engine.apply`` set it to the
            ``num_inference_steps`` you call the pipeline with.
        mag_ratios: the curve; ``None`` takes the family's (as ``cache=magcache`` does).
    """

    name: str = "diffusers_magcache"
    threshold: float = 0.12
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    num_inference_steps: Optional[int] = None
    mag_ratios: Optional[list[float]] = None


@dataclass
class DiffusersSeaCacheConfig:
    """Peer: diffusers' own SeaCache (``cache=diffusers_seacache``), beside ``cache=seacache``.

    diffusers reads the step index, sigma and step count from the ``cache_context`` the pipeline
    opens; pipelines that do not pass them (FluxPipeline, the tiny model) run it fail-open: every
    block computes (diffusers warns once per apply). ``cache=seacache`` is the same algorithm on
    the engine's step state.

    Attributes:
        name: transform implementation (``diffusers_seacache``).
        threshold: diffusers' ``SeaCacheConfig.threshold`` (accumulated relative L1 budget).
        residual_order: 0 reuses the last residual, 1 extrapolates from the last two.
        retention_steps: the first scheduler steps always compute.
        cache_end_steps: the last scheduler steps always compute.
        max_consecutive_cached: most cached steps in a row; 0 for no limit.
        power_exp: exponent of the SEA filter's clean-signal power prior.
    """

    name: str = "diffusers_seacache"
    threshold: float = 0.25
    residual_order: int = 1
    retention_steps: int = 1
    cache_end_steps: int = 1
    max_consecutive_cached: int = 2
    power_exp: float = 3.0


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
class PlanStepsConfig:
    """``cache=plan_steps``: run uncached, record every step's model output, and write
    ``schedule.json``: for each budget, the computed steps that forecast best.

    Bind the forecaster you will run with (``calibrator=spectrum``, ``taylorseer``, ``foca``...):
    the plan minimises its error; without a calibrator it plans for plain reuse.

    Attributes:
        name: transform implementation (``plan_steps``).
        budgets: the fractions of steps computed to plan for, each in (0, 1]; a budget of
            ``b`` plans ``round(b * steps)`` computes (as ``cache.budget`` counts them).
        sample_elements: model-output elements recorded per request and step (a fixed random
            sample; the whole output when smaller). The plan's error is a mean over elements,
            so a sample estimates it; 65536 keeps a 28-step record of 10 requests under 100 MB.
        seed: the seed of that sample.
        replay_requests: recorded requests (pipeline calls) kept whole for closed-loop replays:
            each candidate schedule is run again on them (the transformer called on its computed
            steps, the forecaster answering the others) and judged by the final sample's error.
            0 plans on the recorded trajectory alone (open loop), which cannot see a forecast's
            error change what the model computes next and misjudges late computes.
        evaluations: replays allowed per budget (each runs the transformer on that budget's
            computed steps of every replayed request): the search's cost, a few plain runs.
    """

    name: str = "plan_steps"
    budgets: list[float] = field(default_factory=lambda: [0.11, 0.18, 0.25, 0.33])
    sample_elements: int = 65536
    seed: int = 0
    replay_requests: int = 1
    evaluations: int = 60


@dataclass
class SignalFitConfig:
    """``cache=fit_signals``: run uncached and write ``calibration.json`` (TeaCache polynomial,
    MagCache ratio curve) into the run directory.

    Attributes:
        name: transform implementation (``fit_signals``).
    """

    name: str = "fit_signals"


@dataclass
class TeaCacheConfig(BlockCacheConfig):
    """TeaCache (``cache=teacache``): skip whole steps while the polynomial-rescaled relative L1
    change of the timestep-modulated input, accumulated since the last computed step, stays below
    ``threshold``. The first and last steps always compute. ``front_blocks`` / ``back_blocks``
    do not apply (whole steps are skipped).

    Attributes:
        name: transform implementation (``teacache``).
        coefficients: the rescaling polynomial, highest power first. ``None``: from
            ``signals_file``, else the family's published ones (FLUX; the tiny model's shipped
            calibration).
        signals_file: a ``calibration.json`` written by ``python -m dit_engine cache=fit_signals``
            (``cache.calibration_file`` is its old name).
    """

    name: str = "teacache"
    front_blocks: int = 0
    coefficients: Optional[list[float]] = None
    signals_file: Optional[str] = None


@dataclass
class SCMConfig(BlockCacheConfig):
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
        budget: the fraction of steps to compute, in (0, 1] (``cache.budget=0.2``: one step in
            five): ask for a speed instead of a preset. Overrides ``preset``; 1.0 computes every
            step (identical to no cache). Laid out like a preset (the first tenth, then evenly
            strided), or placed by the ``adaptive`` policy.
        policy: ``dynamic``, ``static`` (see above) or ``adaptive``: a budget of computed steps
            (``budget``, else the preset's fraction) placed one step at a time: after each
            computed step the forecast error of that step (what the calibrator, or plain reuse,
            would have answered vs what was computed) sets how far the next compute may be, so
            computes gather where the trajectory bends and thin out where it is smooth.
        layout: how a budget or preset spaces its computes when no schedule or mask says (the
            ``adaptive`` policy's starting layout too):
            ``steps`` (evenly in the step index) or ``sigmas`` (evenly in the noise level, the
            scheduler's sigmas of each request; the step index where it has none). On a shifted
            schedule (FLUX, SD3, Qwen-Image) ``sigmas`` computes where the sample changes.
        schedule: a ``schedule.json`` planned by ``cache=plan_steps`` for this model and workload:
            the budget's computed steps are the plan's (chosen by measured forecast error)
            instead of the layout rule's. The budget is ``budget`` (else the preset's fraction)
            and must be one the file planned; a request that differs from the file's signature
            (model, transformer, steps, resolution, scheduler, sigmas, calibrator) is refused.
        skip_level: ``blocks`` (cached steps skip the middle blocks) or ``model`` (static policy
            only: a cached step skips the whole transformer call and reuses, or with a
            calibrator forecasts, the model output; front/back blocks are not used).
    """

    name: str = "scm"
    preset: Optional[Preset] = Preset.medium
    mask: Optional[str] = None
    budget: Optional[float] = None
    schedule: Optional[str] = None
    layout: Layout = Layout.steps
    policy: Policy = Policy.dynamic
    skip_level: SkipLevel = SkipLevel.blocks


@dataclass
class SeaCacheConfig(BlockCacheConfig):
    """SeaCache (``cache=seacache``): skip whole steps while the accumulated mean relative L1
    change of the SEA indicator (the latent, spectrally filtered for the step's noise level)
    stays below ``threshold``. Needs no calibration; works on every adapted pipeline whose
    scheduler has sigmas or timesteps. ``front_blocks`` / ``back_blocks`` do not apply (whole
    steps are skipped); the inherited ``warmup_steps`` / ``max_continuous_cached_steps`` /
    ``max_cached_steps`` limits still hold on top of SeaCache's own.

    The indicator is filtered over the latent's spatial (and temporal) axes: ``(B, C, H, W)``
    over H, W; ``(B, C, T, H, W)`` over T, H, W; a packed token sequence ``(B, L, D)`` (FLUX, the
    tiny model) over a square ``sqrt(L) x sqrt(L)`` grid when L is a perfect square, else along
    the sequence axis (the grid of a non-square image is not in the tensor; row-major tokens
    still make the sequence axis a frequency axis); a list of per-sample latents, each alone.

    Attributes:
        name: transform implementation (``seacache``).
        threshold: budget of the accumulated relative L1 change of the indicator since the last
            computed step; a step is cached while the sum stays below it. 0 never caches
            (output identical to no cache); larger caches more steps.
        residual_order: 0 reuses the residual of the last computed step; 1 extrapolates it
            linearly from the last two computed steps (as diffusers' SeaCache). A bound
            calibrator (``calibrator=taylorseer``, ``abcache``) replaces either.
        retention_steps: the first scheduler steps always compute.
        cache_end_steps: the last scheduler steps always compute.
        max_consecutive_cached: most cached steps in a row before a full compute; 0 for no limit.
        power_exp: exponent of the clean-signal power prior ``1 / |f| ** power_exp`` that shapes
            the filter (SeaCache uses 3.0); larger damps high frequencies harder.
    """

    name: str = "seacache"
    front_blocks: int = 0
    threshold: Optional[float] = 0.25
    warmup_steps: int = 0
    residual_order: int = 1
    retention_steps: int = 1
    cache_end_steps: int = 1
    max_consecutive_cached: int = 2
    power_exp: float = 3.0


@dataclass
class MagCacheConfig(BlockCacheConfig):
    """MagCache (``cache=magcache``): skip whole steps while the accumulated deviation from 1 of the
    product of the model's residual magnitude ratios stays below ``threshold``; at most
    ``max_continuous_cached_steps`` in a row. The ratio curve is interpolated to the requested
    step count, so one calibration serves any number of steps. ``front_blocks`` /
    ``back_blocks`` do not apply (whole steps are skipped).

    Attributes:
        name: transform implementation (``magcache``).
        mag_ratios: per-step magnitude ratios; ``None``: from ``signals_file``, else the
            family's (FLUX: MagCache's published curve; the tiny model: its shipped calibration).
        signals_file: a ``calibration.json`` written by ``python -m dit_engine cache=fit_signals``
            (``cache.calibration_file`` is its old name).
        retention_ratio: the first fraction of the steps always computes.
    """

    name: str = "magcache"
    front_blocks: int = 0
    mag_ratios: Optional[list[float]] = None
    signals_file: Optional[str] = None
    retention_ratio: float = 0.2


@dataclass
class DBPruneConfig(BlockCacheConfig):
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
class DBCacheConfig(BlockCacheConfig):
    """DBCache: dual-block residual cache (``cache=dbcache``; ``cache=fbcache`` is F1B0).

    Attributes:
        name: transform implementation (``dbcache``); see :class:`BlockCacheConfig` for the rest.
    """

    name: str = "dbcache"
