"""SeaCache (``cache=seacache``, arXiv 2602.18993): skip whole steps while the Spectral-Evolution-
Aware (SEA) indicator, accumulated since the last computed step, barely changes.

The indicator is the raw visual latent the transformer is called with, filtered in the frequency
domain by the Wiener gain of a clean signal with power ``1 / |f| ** power_exp`` seen through the
step's noise level sigma (``x_t = (1 - sigma) x_0 + sigma noise``): it keeps the content the model
can already resolve at that noise level and damps the noise. While the accumulated mean relative
L1 change of the indicator stays below the threshold, the block stack is replaced by the residual
of the last computed step (order 0) or its linear extrapolation from the last two (order 1).

diffusers ships the same algorithm as hooks that read the step, sigma and step count from the
pipeline's ``cache_context``; FluxPipeline and most others never pass them, so it runs fail-open
there (``cache=diffusers_seacache`` shows that). Here the engine owns the step state
(:class:`~dit_engine.steps.StepState`: step index, step count and each step's sigma from
``scheduler.set_timesteps``), so SeaCache works on every adapted pipeline. It is the block cache
with Fn = Bn = 0 (decided before the first block runs) and :class:`SeaCacheRule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from dit_engine.adapter import ModelInfo
from dit_engine.caches.block_cache import BlockCache, BranchState, WholeStepBlockCache, relative_l1
from dit_engine.calibrators.abcache import PolynomialExtrapolationForecaster
from dit_engine.errors import DitEngineError
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, PlanContext
from dit_engine.caches.configs import SeaCacheConfig  # noqa: F401 - the schema, torch-free (re-exported)

NO_SIGMAS = (
    "cache=seacache needs each step's noise level, which the engine reads from the scheduler at set_timesteps, and this "
    "transformer call has none (called outside a pipeline, or a scheduler without sigmas or timesteps); call the pipeline "
    "with a sigma/timestep scheduler, or use cache=dbcache or cache=magcache"
)


def sea_filter(latent: torch.Tensor, sigma: float, power_exp: float) -> torch.Tensor:
    """The SEA indicator of one latent tensor at noise level ``sigma`` (float32, same shape).

    Each filtered axis gets the Wiener gain ``s P / (s**2 P + n**2)`` of a clean signal of power
    ``P = 1 / |f| ** power_exp`` at signal scale ``s = 1 - sigma`` and noise scale ``n = sigma``;
    the product over the axes is normalised to unit mean so indicators of different steps are
    comparable.
    """
    x = latent.detach().float()
    if x.ndim == 3:  # (B, L, D) packed tokens
        side = math.isqrt(x.shape[1])
        if side * side == x.shape[1]:
            x = x.reshape(x.shape[0], side, side, x.shape[2])
            axes: tuple[int, ...] = (1, 2)
        else:
            axes = (1,)
    elif x.ndim >= 4:  # (B, C, *spatial)
        axes = tuple(range(2, x.ndim))
    else:
        raise DitEngineError(f"cache=seacache cannot filter a latent of shape {tuple(latent.shape)}: it needs (B, L, D), "
                             "(B, C, H, W) or (B, C, T, H, W); use cache=dbcache for this model")
    sigma = min(max(sigma, 1e-6), 1.0 - 1e-6)  # both scales nonzero: the gain stays finite
    signal, noise = 1.0 - sigma, sigma
    gain = torch.ones((), device=x.device)
    for axis in axes:
        clean = 1.0 / (torch.fft.fftfreq(x.shape[axis], device=x.device).abs() ** power_exp + 1e-16)
        shape = [1] * x.ndim
        shape[axis] = -1
        gain = gain * (signal * clean / (signal**2 * clean + noise**2)).reshape(shape)
    gain = gain / gain.mean()
    filtered = torch.fft.ifftn(torch.fft.fftn(x, dim=axes) * gain, dim=axes).real
    return filtered.reshape(latent.shape)


def sea_indicator(latent: Any, sigma: float, power_exp: float) -> torch.Tensor:
    """The SEA indicator of a transformer's latent input: one tensor, or a list of per-sample
    latents (Z-Image), each filtered alone and concatenated."""
    if isinstance(latent, torch.Tensor):
        return sea_filter(latent, sigma, power_exp)
    if isinstance(latent, (list, tuple)) and latent and all(isinstance(t, torch.Tensor) for t in latent):
        return torch.cat([sea_filter(t.unsqueeze(0), sigma, power_exp).flatten() for t in latent])
    raise DitEngineError("cache=seacache found no latent tensor in the transformer call (positional argument 0 or "
                         "hidden_states); use cache=dbcache for this model")


@dataclass
class SeaBranch:
    indicator: Optional[torch.Tensor] = None  # of the previous call
    accumulated: float = 0.0  # relative change since the last compute


class SeaCacheRule:
    """Accumulate the relative L1 change of the SEA indicator; hit while the sum stays below the
    threshold, reset it on a compute. The retention and end steps, the first observation and the
    step after ``max_consecutive_cached`` hits always compute.

    The transformer's latent input reaches the rule through :meth:`observe`, a forward pre-hook
    registered first on the transformer: it sees the call's inputs before a context-parallel
    split, so every rank filters the whole latent and takes the single-process decision.
    """

    def __init__(self, config: SeaCacheConfig):
        self.threshold = config.threshold
        self.power_exp = config.power_exp
        self.retention_steps = config.retention_steps
        self.cache_end_steps = config.cache_end_steps
        self.max_consecutive = config.max_consecutive_cached
        self.latent: Any = None  # of the current transformer call, until the decision takes it

    def observe(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook: keep the call's latent input (positional 0 or ``hidden_states``)."""
        self.latent = args[0] if args else kwargs.get("hidden_states")

    def new_request(self, cache: BlockCache) -> None:
        self.latent = None

    def _latent_of(self, cache: BlockCache) -> Any:
        """The latent this decision reads: the call's, or under ``cache.per_sample`` the row's
        own (a batch of one); the call's latent is let go once its last decision has read it."""
        latent, row = self.latent, cache.deciding_row
        if row is None or row == cache.deciding_rows - 1:
            self.latent = None
        if row is None or latent is None:
            return latent
        return latent[row:row + 1]  # a tensor's row, or a per-sample list's entry, as a batch of one

    def should_hit(self, cache: BlockCache, state: BranchState, step: int, front_residual, entry) -> bool:
        steps = cache.step_state
        if steps.sigmas is None:
            raise DitEngineError(NO_SIGMAS)
        latent = self._latent_of(cache)
        if cache.follows_leader():
            return cache.may_cache(state, step) and cache.leader_hit(step)
        if self.threshold <= 0:
            return False  # nothing can ever be cached: the indicator (FFTs every step) is not worth computing
        signal = state.rule = state.rule or SeaBranch()
        # Retention, end and sigma go by the scheduler step, as the paper's schedule does.
        sigma = steps.sigma  # None past the end of the schedule: compute
        indicator = sea_indicator(latent, sigma, self.power_exp) if sigma is not None else None
        previous, signal.indicator = signal.indicator, indicator
        if (
            indicator is None
            or previous is None
            or previous.shape != indicator.shape
            or steps.step < self.retention_steps
            or steps.step >= steps.num_steps - self.cache_end_steps
            or (self.max_consecutive and state.continuous_cached >= self.max_consecutive)
            or not cache.may_cache(state, step)
        ):
            signal.accumulated = 0.0
            return False
        accumulated = signal.accumulated + relative_l1(indicator, previous, cache.group)
        hit = accumulated < self.threshold
        signal.accumulated = accumulated if hit else 0.0
        return hit


class SeaCacheTransform(WholeStepBlockCache):
    """``cache=seacache``."""

    name = "cache.seacache"
    stage = Stage.CACHE
    config_class = SeaCacheConfig

    @classmethod
    def check(cls, config: SeaCacheConfig, context: PlanContext) -> list[str]:
        problems = cls.block_problems(config, context, needs_threshold=False)
        if config.threshold is None or not config.threshold >= 0:  # also catches NaN
            problems.append(f"cache.threshold={config.threshold} must be >= 0 (0 never caches); try cache.threshold=0.25")
        if config.residual_order not in (0, 1):
            problems.append(f"cache.residual_order={config.residual_order}: use 0 (reuse the last residual) or 1 "
                            "(extrapolate from the last two)")
        for key in ("retention_steps", "cache_end_steps", "max_consecutive_cached"):
            if getattr(config, key) < 0:
                problems.append(f"cache.{key}={getattr(config, key)} is negative; use 0 or more")
        if not 0 < config.power_exp < math.inf:
            problems.append(f"cache.power_exp={config.power_exp} must be a positive number; SeaCache uses 3.0")
        return problems

    @classmethod
    def describe(cls, config: SeaCacheConfig, model_info: ModelInfo) -> str:
        return (
            f"SeaCache whole-step skip over {model_info.total_blocks} blocks, threshold={config.threshold}, "
            f"residual_order={config.residual_order}, retention_steps={config.retention_steps}, "
            f"cache_end_steps={config.cache_end_steps}, max_consecutive_cached={config.max_consecutive_cached}, "
            f"power_exp={config.power_exp}"
        )

    def make_rule(self, transformer: str, context: ApplyContext) -> SeaCacheRule:
        rule = SeaCacheRule(self.config)
        module = context.transformers[transformer]
        self.observers.append(module.register_forward_pre_hook(rule.observe, with_kwargs=True, prepend=True))
        return rule

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        self.observers: list[torch.utils.hooks.RemovableHandle] = []
        super().apply(pipe, context)
        self.unbind_forecaster()

    def unbind_forecaster(self) -> None:
        """Back to SeaCache's own residual prediction: order 1 is linear extrapolation from the
        last two computed steps (the same forecast as ``calibrator=abcache`` order 1); order 0
        reuses the last residual."""
        forecaster = PolynomialExtrapolationForecaster(order=1, warmup=2) if self.config.residual_order == 1 else None
        for cache in self.caches:
            cache.forecaster = forecaster

    def remove(self, pipe: Any) -> None:
        for handle in self.observers:
            handle.remove()
        self.observers = []
        super().remove(pipe)
