"""The transform contract.

A transform is one stage's change to a pipeline. It brings its own config dataclass
(``config_class``, registered as the Hydra schema ``schema_<impl>`` of its group through the same
entry point as the transform), a pure ``check`` (config and model facts only, no weights) run at
plan-compile time, ``apply`` that changes a loaded pipeline, and ``remove`` that puts it back.

Lifecycle, declared per class so the plan and the session can honour it:

* ``acts``: ``"loaded"`` (applied to a loaded pipeline: hooks, wrappers) or ``"load_time"`` (it
  contributes ``from_pretrained`` arguments through :meth:`Transform.load_kwargs`, e.g. a
  ``quantization_config`` or a ``device_map``, and then finishes in ``apply``);
* ``reversible``: whether ``remove`` restores the pipeline exactly. Quantization, tensor
  parallelism and compilation are not; :meth:`dit_engine.Handle.remove` refuses a plan that holds
  one, naming it, before it removes anything;
* ``places_pipeline``: the transform decides where the modules live (offload); the session then
  does not move the pipeline to ``model.device`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from omegaconf import OmegaConf

from dit_engine.adapter import Adapter, ModelInfo
from dit_engine.plan import PlanContext, Stage
from dit_engine.steps import StepState


@dataclass
class ApplyContext:
    """What a transform sees when it is applied to a loaded pipeline."""

    adapter: Adapter
    model_info: ModelInfo
    transformers: dict[str, torch.nn.Module]
    step_state: StepState
    #: The transforms applied before this one, in plan order (a calibrator finds its cache here).
    applied: list["Transform"] = field(default_factory=list)
    #: The group a context-parallel plan spreads the sequence over (set by ``parallel=``); caches
    #: reduce their decision statistics over it so every rank decides alike. None: one process.
    sequence_group: Any = None


@runtime_checkable
class ForecastTarget(Protocol):
    """A cache a calibrator can bind to: cached steps then use the forecaster's prediction of the
    residual (or output) instead of the stale value."""

    def bind_forecaster(self, forecaster: Any) -> None: ...

    def unbind_forecaster(self) -> None: ...


class Transform:
    """Base class of every transform; subclasses set ``name``, ``stage`` and ``config_class``."""

    name: ClassVar[str] = ""
    stage: ClassVar[Stage]
    config_class: ClassVar[type | None] = None
    #: ``"loaded"``: applied to a loaded pipeline; ``"load_time"``: also shapes ``from_pretrained``.
    acts: ClassVar[str] = "loaded"
    #: ``remove`` restores the pipeline exactly (hooks); False for quantize / shard / compile.
    reversible: ClassVar[bool] = True
    #: The transform places the modules on devices itself (offload): the session does not.
    places_pipeline: ClassVar[bool] = False
    #: Every rank of a parallel plan takes the same decisions (statistics reduced over the
    #: sequence group). Transforms that decide on a rank's own shard alone (third-party caches)
    #: set False, and the plan refuses them with ``parallel=``.
    rank_consistent: ClassVar[bool] = True

    def __init__(self, config: Any = None):
        self.config = config

    #: config key -> adapter attribute holding the family's published value for it
    #: (e.g. ``{"mag_ratios": "mag_ratios"}``: MagCache's curve from ``Adapter.mag_ratios``).
    adapter_facts: ClassVar[dict[str, str]] = {}

    @classmethod
    def family_defaults(cls, adapter: Adapter) -> dict[str, Any]:
        """The model family's values for settings this transform's config leaves ``None``:
        ``adapter.transform_defaults[<name>]`` (thresholds) and the published facts named in
        :attr:`adapter_facts`."""
        defaults = dict(adapter.transform_defaults.get(cls.name, {}))
        for key, attribute in cls.adapter_facts.items():
            published = getattr(adapter, attribute, None)
            if published is not None:
                defaults[key] = list(published)
        return defaults

    @classmethod
    def resolve_config(cls, node: Any, adapter: Adapter) -> Any:
        """The config object for this transform from its composed node, with ``None`` settings
        filled from :meth:`family_defaults`."""
        if cls.config_class is None or node is None:
            return None
        values = OmegaConf.to_container(node, resolve=True)
        for key, default in cls.family_defaults(adapter).items():
            if values.get(key) is None:
                values[key] = default
        return cls.config_class(**values)

    @classmethod
    def check(cls, config: Any, context: PlanContext) -> list[str]:
        """Problems with ``config`` for this model, each a one-line fix. Must not touch weights."""
        return []

    @classmethod
    def workload_problems(cls, config: Any, adapter: Adapter, call_kwargs: dict[str, Any]) -> list[str]:
        """Problems that show only with the run's pipeline-call arguments (CLI runs), one-line fixes."""
        return []

    @classmethod
    def is_reversible(cls, config: Any) -> bool:
        """Whether ``remove`` restores the pipeline with this config (default :attr:`reversible`)."""
        return cls.reversible

    @classmethod
    def describe(cls, config: Any, model_info: ModelInfo) -> str:
        """One line for ``Plan.explain()``."""
        return cls.name

    @classmethod
    def load_kwargs(cls, config: Any) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments of a ``load_time`` transform (none otherwise)."""
        return {}

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        raise NotImplementedError

    def apply_inner(self, pipe: Any, context: ApplyContext) -> None:
        """Called before any step of the plan is applied, in plan order: for changes that must sit
        beneath the hooks of earlier stages (regional compile of each block's forward)."""

    def apply_outer(self, pipe: Any, context: ApplyContext) -> None:
        """Called after every step of the plan is applied, in plan order: for wrappers that must
        enclose the hooks of later stages (CFG parallel around the caches). Undone by ``remove``."""

    def remove(self, pipe: Any) -> None:
        raise NotImplementedError

    def split_batch(self, shard: Callable[[torch.Tensor], torch.Tensor] | None, group: Any) -> None:
        """CFG parallel learned, at the end of a request's first step (computed whole on every
        rank), that the pipeline batches its CFG branches: from the next step on each rank sees
        only its part of the batch. A transform that keeps tensors across steps takes its part of
        them with ``shard`` (it leaves tensors without the batch dimension alone) and reduces
        statistics over the whole batch through ``group``. ``shard=None``: a new request starts
        whole again (the transform goes back to its own group from :class:`ApplyContext`).
        """

    def reset_stats(self) -> None:
        """Forget the counters (``Handle.reset``)."""

    def stats(self) -> dict[str, Any]:
        """JSON-serialisable counters since apply or the last reset."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        """Files this transform adds to the run directory: name -> JSON-serialisable data."""
        return {}
