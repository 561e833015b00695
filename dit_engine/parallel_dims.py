"""The parallel degrees of a plan, validated once: the one object every later step reads.

:class:`ParallelDims` is built by the plan from the ``parallel=`` step's typed config (all 1 without
one), like torchtitan's ``ParallelDims``: the world size, the sequence-parallel size and the mesh
(:class:`dit_engine.parallel.mesh.ParallelMesh`) all come from it, never from the config keys.
Torch-free, so launchers can read a plan's world size cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The config keys of the degrees, in the order they are named.
DEGREE_KEYS = ("ulysses_degree", "ring_degree", "cfg_degree", "tp_degree")


@dataclass(frozen=True)
class ParallelDims:
    """How many ranks each kind of parallelism spans; their product is the world size."""

    ulysses: int = 1
    ring: int = 1
    cfg: int = 1
    tp: int = 1

    @staticmethod
    def problems(config: Any) -> list[str]:
        """Degrees of a ``parallel=`` config that are not whole numbers >= 1, each a one-line fix."""
        return [f"parallel.{key}={getattr(config, key)} must be a whole number >= 1"
                for key in DEGREE_KEYS if not _valid(getattr(config, key))]

    @classmethod
    def from_config(cls, config: Any) -> "ParallelDims":
        """The degrees of a typed ``parallel=`` config (None: one rank). Invalid degrees count as
        1 here; :meth:`problems` reports them."""
        if config is None:
            return cls()
        values = [getattr(config, key) for key in DEGREE_KEYS]
        return cls(*(value if _valid(value) else 1 for value in values))

    @property
    def world(self) -> int:
        return self.ulysses * self.ring * self.cfg * self.tp

    @property
    def sequence(self) -> int:
        """Ranks the sequence is split over (Ulysses x Ring)."""
        return self.ulysses * self.ring

    def describe(self) -> str:
        named = [f"{name} {value}" for name, value in (("ulysses", self.ulysses), ("ring", self.ring), ("cfg", self.cfg),
                                                         ("tp", self.tp)) if value > 1]
        return " x ".join(named) if named else "degree 1 (one rank)"


def _valid(value: Any) -> bool:
    return isinstance(value, int) and value >= 1
