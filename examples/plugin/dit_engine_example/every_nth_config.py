"""``cache=every_nth``'s config dataclass, the Hydra schema ``schema_every_nth``.

In a module of its own that imports no torch, registered under the ``dit_engine.schemas`` entry
point: composing a config that chooses ``cache=every_nth``, shell completion of its keys and the
config checks (:meth:`EveryNthConfig.value_problems`) then never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from dit_engine.config.schema import BlockCacheConfig


@dataclass
class EveryNthConfig(BlockCacheConfig):
    """``cache=every_nth``: compute every ``interval``-th step, reuse the middle blocks otherwise.

    Attributes:
        name: transform implementation (``every_nth``).
        interval: steps between computes after the warm-up; 1 computes every step (exact).
    """

    name: str = "every_nth"
    interval: int = 3

    def value_problems(self) -> list[str]:
        """The shared cache settings' ranges, and the interval's (checked before torch loads)."""
        problems = super().value_problems()
        if self.interval < 1:
            problems.append(f"cache.interval={self.interval}: use 1 (every step) or more")
        return problems
