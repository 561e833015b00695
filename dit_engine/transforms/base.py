"""The transform contract: a slim core every transform has, and opt-in protocols for the rest.

A transform is one stage's change to a pipeline. The core (:class:`Transform`) is what every
technique needs: a ``name`` (its entry point, ``<stage>.<impl>``), a ``stage``, a ``config_class``
(its Hydra schema ``schema_<impl>``), a pure ``check`` (typed config and plan facts only, no
weights) run at plan-compile time, ``apply`` that changes a loaded pipeline, ``remove`` that puts
it back, ``stats`` / ``reset_stats`` for its counters, and its :class:`Lifecycle` flags.

What only some techniques need is a protocol in :mod:`dit_engine.transforms.protocols` (load-time
arguments, wrapping inside or around the other steps, CFG batch splitting, workload checks, run
artifacts, a one-line description, family defaults); a transform opts in by defining the method,
and the engine asks with ``isinstance`` against the runtime-checkable protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch

from dit_engine.adapter import Adapter, ModelInfo
from dit_engine.config.groups import Stage
from dit_engine.parallel_dims import ParallelDims
from dit_engine.steps import StepState


@dataclass(frozen=True)
class Lifecycle:
    """How a transform's application behaves, declared per class so the plan and the session can
    honour it.

    Attributes:
        reversible: ``remove`` restores the pipeline exactly (hooks). Quantization, tensor
            parallelism and compilation are not: :meth:`dit_engine.Handle.remove` refuses a plan
            that holds one, naming it, before it removes anything. (A transform whose answer
            depends on its config implements :class:`~dit_engine.transforms.protocols.ReversibleByConfig`.)
        rank_consistent: every rank of a parallel plan takes the same decisions (statistics reduced
            over the sequence group). Transforms that decide on a rank's own shard alone
            (third-party caches) say False, and the plan refuses them with ``parallel=``.
        places_pipeline: the transform decides where the modules live (offload); the session then
            does not move the pipeline to ``model.device`` itself.
    """

    reversible: bool = True
    rank_consistent: bool = True
    places_pipeline: bool = False


@dataclass(frozen=True)
class PlanContext:
    """What a transform's ``check`` may look at: typed plan facts, never weights or raw config.

    Attributes:
        adapter: the model family's adapter.
        model_info: block lists, head count and where those facts came from.
        dims: the validated parallel degrees (all 1 without ``parallel=``).
        device: the device the run asks for (``model.device``); None when it names none usable
            (the session reports that itself).
        configs: group -> the resolved, typed config of the step chosen in it.
    """

    adapter: Adapter
    model_info: ModelInfo
    dims: ParallelDims = field(default_factory=ParallelDims)
    device: Optional[torch.device] = None
    configs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ApplyContext:
    """What a transform sees when it is applied to a loaded pipeline."""

    adapter: Adapter
    model_info: ModelInfo
    transformers: dict[str, torch.nn.Module]
    step_state: StepState
    #: The plan's validated parallel degrees (the mesh is built from them).
    dims: ParallelDims = field(default_factory=ParallelDims)
    #: The transforms applied before this one, in plan order (a calibrator finds its cache here).
    applied: list["Transform"] = field(default_factory=list)
    #: The group a context-parallel plan spreads the sequence over (set by ``parallel=``); caches
    #: reduce their decision statistics over it so every rank decides alike. None: one process.
    sequence_group: Any = None


class Transform:
    """Base class of every transform; subclasses set ``name``, ``stage`` and ``config_class``."""

    name: ClassVar[str] = ""
    stage: ClassVar[Stage]
    config_class: ClassVar[type | None] = None
    lifecycle: ClassVar[Lifecycle] = Lifecycle()

    def __init__(self, config: Any = None):
        self.config = config

    @classmethod
    def check(cls, config: Any, context: PlanContext) -> list[str]:
        """Problems with ``config`` for this model, each a one-line fix. Must not touch weights.
        Problems that involve another group's settings are relations (:mod:`dit_engine.relations`)."""
        return []

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        raise NotImplementedError

    def remove(self, pipe: Any) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """JSON-serialisable counters since apply or the last reset."""
        return {}

    def reset_stats(self) -> None:
        """Forget the counters (``Handle.reset``)."""
