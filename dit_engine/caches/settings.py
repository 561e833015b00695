"""The settings every block cache shares, in a module that imports no torch (composing the
default config, ``--help`` and completion read them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class BlockCacheConfig:
    """Settings shared by the block caches (``cache=dbcache``, ``fbcache``, ``scm``, ``teacache``...).

    All transformer block lists of the model are treated as one sequence of N blocks. The first
    ``front_blocks`` (Fn) and the last ``back_blocks`` (Bn) always run; the cache's decision rule
    says when the middle blocks are reused.

    Attributes:
        front_blocks: Fn, blocks always computed at the start; they probe how much the step
            changed. More front blocks: better decisions and quality, less saving.
        back_blocks: Bn, blocks always computed at the end; they refine the reused residual.
            More back blocks: better quality, less saving. Fn + Bn must be below N.
        threshold: the decision rule's threshold (DBCache: relative L1 change of the Fn residual
            below which the middle blocks are reused). 0 never caches (output identical to no
            cache); larger caches more steps, faster and further from the uncached image.
            ``None`` takes the model adapter's default for this family (tiny: 0.2, flux: 0.08);
            the plan shows the value used.
        threshold_scale: multiplies the model's default threshold when ``threshold`` is null
            (the presets ``dbcache_fast`` and ``dbcache_slow`` use it); ignored otherwise.
        warmup_steps: the first steps of every request always compute (the trajectory changes
            fastest there).
        max_cached_steps: most cached steps per request and CFG branch; -1 for no limit.
        max_continuous_cached_steps: most cached steps in a row before one full compute; -1 for
            no limit. A small value bounds drift at high thresholds.
        separate_cfg: ``None`` or ``True``: every CFG branch (the k-th transformer call of a
            step) decides on its own; ``False``: later branches follow the first branch's
            decision, so cond and uncond are always computed or cached together. Batched CFG
            (one call per step) is one branch either way.
    """

    front_blocks: int = 1
    back_blocks: int = 0
    threshold: Optional[float] = None
    threshold_scale: float = 1.0
    warmup_steps: int = 2
    max_cached_steps: int = -1
    max_continuous_cached_steps: int = -1
    separate_cfg: Optional[bool] = None
