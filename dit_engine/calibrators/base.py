"""What every calibrator shares: bind a forecaster to the cache installed before it."""

from __future__ import annotations

from typing import Any, ClassVar

from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, PlanContext, Transform
from dit_engine.transforms.protocols import ForecastTarget


class CalibratorTransform(Transform):
    """Base of the calibrators: ``make_forecaster()`` builds the forecaster, ``apply`` binds it to
    the cache of this plan through :class:`~dit_engine.transforms.base.ForecastTarget`."""

    stage = Stage.CALIBRATE
    label: ClassVar[str] = ""

    @classmethod
    def check(cls, config: Any, context: PlanContext) -> list[str]:
        problems = []
        if not 1 <= config.order <= 3:
            problems.append(f"calibrator.order={config.order}: use 1, 2 or 3")
        if config.warmup < 0:
            problems.append(f"calibrator.warmup={config.warmup} is negative; use 0 or more")
        return problems

    @classmethod
    def describe(cls, config: Any, model_info: Any) -> str:
        return f"{cls.label} order {config.order}, forecasting after {config.warmup} computed steps"

    def make_forecaster(self) -> Any:
        raise NotImplementedError

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        # The plan compiler has checked that the cache is a ForecastTarget (cross-group check).
        self.targets = [t for t in context.applied if isinstance(t, ForecastTarget)]
        forecaster = self.make_forecaster()
        forecaster.calibrator = self.config.name  # what a step planner records it planned for
        for target in self.targets:
            target.bind_forecaster(forecaster)

    def remove(self, pipe: Any) -> None:
        for target in self.targets:
            target.unbind_forecaster()
        self.targets = []
