"""A Hydra job's own overrides: what the user asked for, Hydra's settings left out."""

from __future__ import annotations

from collections.abc import Iterable


def user_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides that configure the run (``hydra.*`` ones, Hydra's own settings, left out)."""
    return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
