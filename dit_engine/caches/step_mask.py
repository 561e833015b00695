"""Step computation masks (SCM): which denoising steps must compute.

Flags are True where a step must compute. Presets are defined relative to the step count so the
same preset serves 8, 28 or 50 steps; explicit masks of another length are resampled.
"""

from __future__ import annotations

import math

#: Preset -> share of steps computed.
PRESET_FRACTIONS = {"slow": 0.60, "medium": 0.40, "fast": 0.33, "ultra": 0.25}


def preset_flags(preset: str, num_steps: int) -> list[bool]:
    """Compute the first tenth of the steps (at least one), then evenly strided computes.

    The computes after the head sit at the end of each stride, so every forecast or reuse runs
    from a recent computed step; measured on the embedded model, this beats spending a compute
    on the last step (45.9 vs 43.1 dB at the same 9 of 28 steps with TaylorSeer).
    """
    if num_steps <= 0:
        return []
    target = max(1, round(PRESET_FRACTIONS[preset] * num_steps))
    head = min(num_steps, max(1, math.ceil(0.1 * num_steps)))
    flags = [i < head for i in range(num_steps)]
    remaining = min(target - head, num_steps - head)
    if remaining > 0:
        stride = (num_steps - head) / (remaining + 0.5)  # half a stride of forecasts after the last compute
        for k in range(remaining):
            flags[min(num_steps - 1, head - 1 + round((k + 1) * stride))] = True
    return flags


def mask_problem(mask: str) -> str | None:
    """Why a mask string is malformed, or None."""
    if not mask:
        return "cache.mask is empty; give a bit string like 1111010101 (1 = compute) or drop it to use cache.preset"
    bad = sorted(set(mask) - {"0", "1"})
    if bad:
        return f"cache.mask={mask} has characters other than 0 and 1 ({''.join(bad)}); write it like 1111010101 (1 = compute)"
    return None


def resample(mask: str, num_steps: int) -> list[bool]:
    """Flags of ``mask`` stretched or squeezed to ``num_steps``: step i reads bit floor(i * len / N)."""
    return [mask[i * len(mask) // num_steps] == "1" for i in range(num_steps)]


def flags_to_string(flags: list[bool]) -> str:
    return "".join("1" if f else "0" for f in flags)
