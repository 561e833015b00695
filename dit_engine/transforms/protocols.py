"""Opt-in parts of the transform contract, each a runtime-checkable protocol.

A transform implements one by defining its method(s); the engine asks with ``isinstance`` on the
transform class (classmethods) or instance, never with ``getattr``/``hasattr`` probing. The
protocols an adapter may implement (:class:`TracedAdapter`) and the one a cache rule may
(:class:`ForecastErrorRule`) live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class LoadTime(Protocol):
    """Shapes ``from_pretrained``: its keyword arguments (a ``quantization_config``, a
    ``device_map``), merged in plan order; the transform then finishes in ``apply``."""

    @classmethod
    def load_kwargs(cls, config: Any) -> dict[str, Any]: ...


@runtime_checkable
class Describes(Protocol):
    """One line for ``Plan.explain()`` (without it, the transform's name)."""

    @classmethod
    def describe(cls, config: Any, model_info: Any) -> str: ...


@runtime_checkable
class ReversibleByConfig(Protocol):
    """Whether ``remove`` restores the pipeline depends on the config (tensor parallelism)."""

    @classmethod
    def is_reversible(cls, config: Any) -> bool: ...


@runtime_checkable
class HasFamilyDefaults(Protocol):
    """The model family's values for settings the config leaves ``None`` (published thresholds,
    coefficients, curves), kept beside the technique keyed by family."""

    @classmethod
    def family_defaults(cls, adapter: Any) -> dict[str, Any]: ...


@runtime_checkable
class AdjustsConfig(Protocol):
    """Settles settings that depend on others once the config is resolved (a null threshold
    scaled by ``threshold_scale``; block counts a whole-step cache fixes at 0). ``node`` is the
    composed option, to tell what the user set from what the defaults filled."""

    @classmethod
    def adjust_config(cls, config: Any, node: Any) -> Any: ...


@runtime_checkable
class CompletesConfig(Protocol):
    """Settles settings from the model's facts and the whole run config (``parallel=auto``
    choosing its degrees); returns the config and the problems that leave no choice."""

    @classmethod
    def complete_config(cls, config: Any, adapter: Any, model_info: Any, run_config: Any) -> tuple[Any, list[str]]: ...


@runtime_checkable
class ChecksWorkload(Protocol):
    """Problems that show only with the run's pipeline-call arguments (CLI runs), one-line fixes."""

    @classmethod
    def workload_problems(cls, config: Any, adapter: Any, call_kwargs: dict[str, Any]) -> list[str]: ...


@runtime_checkable
class WrapsInner(Protocol):
    """Applied before any step of the plan, in plan order: for changes that must sit beneath the
    hooks of earlier stages (regional compile of each block's forward)."""

    def apply_inner(self, pipe: Any, context: Any) -> None: ...


@runtime_checkable
class WrapsOuter(Protocol):
    """Applied after every step of the plan, in plan order: for wrappers that must enclose the
    hooks of later stages (CFG parallel around the caches). Undone by ``remove``."""

    def apply_outer(self, pipe: Any, context: Any) -> None: ...


@runtime_checkable
class SplitsBatch(Protocol):
    """Keeps per-request tensors or statistics that CFG parallel must split.

    CFG parallel learns, at the end of a request's first step (computed whole on every rank), that
    the pipeline batches its CFG branches: from the next step on each rank sees only its part of
    the batch. The transform takes its part of the tensors it keeps with ``shard`` (leaving
    tensors without the batch dimension alone) and reduces statistics over the whole batch through
    ``group``. ``shard=None``: a new request starts whole again.
    """

    def split_batch(self, shard: Callable[[torch.Tensor], torch.Tensor] | None, group: Any) -> None: ...


@runtime_checkable
class BatchInvariant(Protocol):
    """A cache whose decisions may not depend on the data (a fixed step mask, with some configs):
    an image is then the same whichever requests share its pipeline call, so the server may batch
    requests. Caches without it decide once for the whole batch and run one request per call."""

    @classmethod
    def batch_invariant(cls, config: Any) -> bool: ...


@runtime_checkable
class WritesArtifacts(Protocol):
    """Files the transform adds to the run directory: name -> JSON-serialisable data."""

    def artifacts(self) -> dict[str, Any]: ...


@runtime_checkable
class ReportsRunMetrics(Protocol):
    """A section the transform adds to ``metrics.json`` from its stats and the run's latency
    (parallel: per-rank timings), under :attr:`metrics_key`."""

    metrics_key: str

    def run_metrics(self, latency: dict[str, Any]) -> dict[str, Any]: ...


@runtime_checkable
class HasExactVariant(Protocol):
    """A transform that can trade exactness for speed (``parallel.comm_dtype=fp8``): when
    :meth:`is_lossy`, the run loop runs the workload once more inside :meth:`exact` and reports
    the run's PSNR against that under ``metrics.json``'s :attr:`metrics_key` section
    (``psnr_vs_exact``): the loss this transform alone causes, apart from any cache's."""

    metrics_key: str

    def is_lossy(self) -> bool: ...

    def exact(self) -> Any: ...  # a context manager


@runtime_checkable
class ForecastTarget(Protocol):
    """A cache a calibrator can bind to: cached steps then use the forecaster's prediction of the
    residual (or output) instead of the stale value."""

    def bind_forecaster(self, forecaster: Any) -> None: ...

    def unbind_forecaster(self) -> None: ...


@runtime_checkable
class ForecastErrorRule(Protocol):
    """A cache rule that wants the forecast error of a step measured (SCM's adaptive policy)."""

    def wants_forecast_error(self, state: Any) -> bool: ...


@runtime_checkable
class TracedAdapter(Protocol):
    """An adapter that infers the block lists from one traced pipeline call (``model=auto``)."""

    def trace(self, pipe: Any, call: dict[str, Any]) -> None: ...

    def trace_kwargs(self, workload: Any) -> dict[str, Any]: ...

    def inferred(self) -> dict[str, Any]: ...
