"""The transform contract.

A transform is one stage's change to a pipeline. ``check`` is pure (config and model facts
only, no weights) and runs at plan-compile time; ``apply`` installs named, removable hooks;
``remove`` puts the pipeline back exactly as it was; ``stats`` reports what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

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
    #: Cache states installed by CACHE-stage transforms, for calibrators to bind to.
    caches: list = field(default_factory=list)


class Transform:
    """Base class of every transform; subclasses set ``name``, ``stage`` and ``config_class``."""

    name: ClassVar[str] = ""
    stage: ClassVar[Stage]
    config_class: ClassVar[type | None] = None

    def __init__(self, config: Any = None):
        self.config = config

    @classmethod
    def check(cls, config: Any, context: PlanContext) -> list[str]:
        """Problems with ``config`` for this model, each a one-line fix. Must not touch weights."""
        return []

    @classmethod
    def describe(cls, config: Any, model_info: ModelInfo) -> str:
        """One line for ``Plan.explain()``."""
        return cls.name

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        raise NotImplementedError

    def remove(self, pipe: Any) -> None:
        raise NotImplementedError

    def reset_stats(self) -> None:
        """Forget the counters (``Handle.reset``)."""

    def stats(self) -> dict[str, Any]:
        """JSON-serialisable counters since apply or the last reset."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        """Files this transform adds to the run directory: name -> JSON-serialisable data."""
        return {}
