"""How many bytes each rank sends per transformer call, per parallel mode (docs/parallel.md).

The model counts what leaves a rank, for even splits, in the collectives this package issues:

* Ulysses (degree U): per attention layer, q, k and v go out (all-to-all) and the output comes
  back: ``4 * B * S * C * b * (U - 1) / U**2``; with ``parallel.comm_dtype=fp8`` ``b`` is 1 and
  every tensor sent to a peer carries a 4-byte scale (``4 * (U - 1) * G * 4`` bytes per layer,
  ``G`` head sub-groups: 2 with ``parallel.ulysses_overlap``, else 1);
* Ring (degree R): per attention layer, each rank's key and value chunk travels ``R - 1`` hops:
  ``2 * B * (S / R) * C * b * (R - 1)``;
* USP (U x R): Ulysses on each ring chunk (``S / R`` tokens), then Ring with ``C / U`` channels;
* the output gather after the last layer: ``B * (S_out / P) * C_out * b * (P - 1)``;
* tensor parallel (degree T): per all-reduce of a ``B * S * C`` activation, a ring all-reduce
  sends ``2 * (T - 1) / T`` of it; Flux-style models all-reduce twice per dual-stream block
  (attention and MLP outputs) and once per single-stream block.

``B`` batch, ``S`` tokens attended (text + image), ``C`` hidden size (heads x head dim), ``b``
bytes per element, ``S_out``/``C_out`` the output's tokens and channels. The tests check the
model against the bytes the collectives really sent on the tiny models.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    """One transformer call's shape."""

    tokens: int  # S: attended tokens (text + image)
    hidden: int  # C: heads x head dim
    attention_layers: int
    output_tokens: int
    output_channels: int
    batch: int = 1
    bytes_per_element: int = 2  # bf16
    allreduces: int = 0  # tensor parallel: activation all-reduces per call


def ulysses_bytes(w: Workload, degree: int, fp8: bool = False, head_groups: int = 1) -> float:
    element = 1 if fp8 else w.bytes_per_element
    per_layer = 4 * w.batch * w.tokens * w.hidden * element * (degree - 1) / degree**2
    if fp8:  # one float32 scale per tensor (q, k, v, output) and peer, per head sub-group
        per_layer += 4 * (degree - 1) * head_groups * 4
    return w.attention_layers * per_layer


def ring_bytes(w: Workload, degree: int, hidden: int | None = None, tokens: int | None = None) -> float:
    hidden = w.hidden if hidden is None else hidden
    tokens = w.tokens if tokens is None else tokens
    per_layer = 2 * w.batch * (tokens / degree) * hidden * w.bytes_per_element * (degree - 1)
    return w.attention_layers * per_layer


def output_gather_bytes(w: Workload, ranks: int) -> float:
    return w.batch * (w.output_tokens / ranks) * w.output_channels * w.bytes_per_element * (ranks - 1)


def context_parallel_bytes(w: Workload, ulysses: int = 1, ring: int = 1, fp8: bool = False, head_groups: int = 1) -> float:
    """Bytes one rank sends per transformer call under Ulysses x Ring (either may be 1); ``fp8``
    and ``head_groups``: the Ulysses exchange's ``parallel.comm_dtype`` and overlap."""
    total = 0.0
    if ulysses > 1:
        total += ulysses_bytes(Workload(**{**w.__dict__, "tokens": w.tokens // ring}), ulysses, fp8, head_groups)
    if ring > 1:
        total += ring_bytes(w, ring, hidden=w.hidden // ulysses)
    if ulysses * ring > 1:
        total += output_gather_bytes(w, ulysses * ring)
    return total


def tensor_parallel_bytes(w: Workload, degree: int) -> float:
    return w.allreduces * 2 * (degree - 1) / degree * w.batch * w.tokens * w.hidden * w.bytes_per_element


#: FLUX.1-dev at 1024 x 1024: 4096 image + 512 text tokens, 24 heads x 128, 19 + 38 blocks, bf16.
FLUX_DEV_1024 = Workload(tokens=4096 + 512, hidden=3072, attention_layers=19 + 38, output_tokens=4096,
                         output_channels=64, allreduces=2 * 19 + 38)
