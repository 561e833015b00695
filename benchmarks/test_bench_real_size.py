"""Real-size DiT transformers on the CPU: the engine's own cost, two caches, three quantization
schemes, regional compilation and Ulysses on two ranks, against plain diffusers, per family.

    BENCH_REAL_SIZE=1 python -m pytest benchmarks/test_bench_real_size.py -p no:cacheprovider -s
    BENCH_REAL_SIZE=1 BENCH_REAL_SIZE_LAYERS=3 python -m pytest ...   # smoke run: 3 blocks per transformer
    BENCH_REAL_SIZE=1 python -m pytest ... -k sd35_medium             # one family

Opt-in (``BENCH_REAL_SIZE=1``): at full depth a family takes about 13 (PixArt-Σ) to 45 minutes
(LTX-Video) on one thread, about three hours for all five (estimated from full-depth call times
and the smoke run's calls). The families (benchmarks/real_size.py)
are published transformer configurations with seeded random weights, float32, at a low
resolution with a short caption and no VAE; one is built at a time and freed before the next
(peak memory: SD3.5 Medium's 10 GB and one int8 copy of its blocks; 2 x 7.7 GB for LTX-Video on
two ranks). Run it on a quiet machine: the blocks are bound by memory bandwidth, and a
neighbour's memory traffic slows them even on the CPU-time clock.

Per family, one pipeline runs plain and under every plan (applied for its timed call and removed
after it); quantized and compiled variants run on twins of it that share its weights
(``real_size.twin``: they cannot be removed). Timing is the harness's (benchmarks/interleave.py):
interleaved rounds on the process's own CPU time, a speedup is the median of per-round pairs
plain / variant with its 95 % interval. The rows:

* the engine's cost: ``cache=none`` and every cache that cannot cache (threshold 0, budget 1);
  outputs equal plain bit for bit (asserted); their cost per step,
  ``(variant s - plain s) / steps``, in units of one block forward of the real model (the
  block-stack share of a plain call, ``interleave.time_shares``, over the block forwards it made);
* DBCache at its default threshold and step forecasting (``scm_static`` + TaylorSeer): compute
  fraction (block forwards run / plain's), speedup, PSNR of the latents vs plain;
* ``compile=regional``: speedup and PSNR vs eager (compiled on its warm-up call);
* ``quant=int8_weight_only``, ``int8_dynamic``, ``intx_weight_only``: the quantized layers' weight
  bytes before -> after, speedup and PSNR vs eager; each quantized twin is timed against plain in
  its own interleaved rounds and freed before the next (memory), the others share one set.

``test_ulysses_on_two_gloo_ranks`` runs Wan 2.1 (and LTX-Video with ``BENCH_REAL_SIZE_LTX_RANKS=1``;
heads divisible by 2) on two gloo ranks with ``parallel=ulysses2``: the max abs difference to the single-process latents, and the
bytes each rank sent against the communication model (dit_engine/parallel/volume.py).

No speed targets: the tables are measurements (at these activations the blocks are bound by
streaming their weights from memory, not by compute, which is not what a GPU at 1024 px sees).
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import dit_engine
from interleave import MIN_ROUNDS, TABLES, Timings, bench_clock, distrust, interleaved, planned, precision_note, time_shares, timing
from real_size import FAMILIES, LAYERS, STEPS, TEXT_TOKENS, output, psnr, twin

pytestmark = pytest.mark.skipif(
    os.environ.get("BENCH_REAL_SIZE") != "1",
    reason="real-size DiT benchmark: tens of minutes per family on one CPU thread; set BENCH_REAL_SIZE=1 to run it "
           "(BENCH_REAL_SIZE_LAYERS=3 for a quick smoke run)")

#: Rounds: exactly the harness's minimum (``BENCH_MIN_ROUNDS``, 6), none added to settle a ratio.
#: A round costs minutes here, and from 6 to 8 rounds the 95 % interval of a median is the range
#: of the pairs, so rounds 7 and 8 could not narrow it; from 9 rounds on it narrows
#: (``BENCH_MIN_ROUNDS=12`` for tighter intervals, at about twice the time).
ROUNDS = MIN_ROUNDS
#: plans that cannot skip anything: their outputs equal plain diffusers' bit for bit. TeaCache and
#: MagCache have published values for FLUX only; at threshold 0 no value is ever used, so neutral
#: ones (the identity polynomial, unit magnitude ratios) let them run on every family.
NOTHING = {
    "cache=none": ("cache=none",),
    "dbcache threshold 0": ("cache=dbcache", "cache.threshold=0"),
    "fbcache threshold 0": ("cache=fbcache", "cache.threshold=0"),
    "teacache threshold 0": ("cache=teacache", "cache.threshold=0", "cache.coefficients=[1.0,0.0]"),
    "magcache threshold 0": ("cache=magcache", "cache.threshold=0", "cache.mag_ratios=[1.0,1.0]"),
    "scm_static budget 1": ("cache=scm_static", "cache.budget=1.0"),
}
CACHES = {
    "dbcache": ("cache=dbcache",),
    "scm_static+taylorseer": ("cache=scm_static", "calibrator=taylorseer"),
}
COMPILE = {"compile=regional": ("compile=regional",)}
#: ``BENCH_REAL_SIZE_QUANT=int8_dynamic`` (comma-separated) measures those schemes only: intx
#: weight-only runs at a fifth of plain's speed on a CPU and is a fifth of a family's time
SCHEMES = os.environ.get("BENCH_REAL_SIZE_QUANT", "int8_weight_only,int8_dynamic,intx_weight_only").split(",")
QUANT = {f"quant={scheme}": (f"quant={scheme}",) for scheme in SCHEMES if scheme}
#: the families run on two ranks: their transformers carry a context-parallel plan, heads divisible
#: by 2. LTX-Video (32 heads) qualifies too, but two fp32 ranks of it (2 x 7.7 GB) beside a pytest
#: process that has run the family tests exceeded a 24 GB machine (the out-of-memory killer ended
#: the session on 2026-12-07): ``-k "ulysses and ltx"`` runs it alone where memory allows.
ULYSSES_FAMILIES = ("wan21_1_3b", "ltx_video_2b") if os.environ.get("BENCH_REAL_SIZE_LTX_RANKS") == "1" else ("wan21_1_3b",)


@dataclass
class Row:
    """One variant's line of a family's table (None: not measured for this variant)."""

    speedup: tuple[float, float, float]  # (low, median, high) of plain / variant
    psnr_db: float
    cost_blocks: tuple[float, float, float] | None = None  # engine cost per step in block forwards
    compute_fraction: float | None = None
    weight_bytes: tuple[int, int] | None = None  # quantized layers: before, after


def cost_in_blocks(timings: Timings, label: str, block_s: float) -> tuple[float, float, float]:
    """``(variant s - plain s) / steps`` over one block forward, with the interval of the speedup
    carried through: ``plain - variant`` is ``plain * (1 / ratio - 1)``, monotonic in the ratio."""
    low, ratio, high = timings.interval(label)
    plain_s = timings.median(timings.reference)
    return tuple(plain_s * (1 / r - 1) / STEPS / block_s for r in (high, ratio, low))


def describe(family, pipe, blocks: int) -> str:
    """The family's line: model, parameters, depth, dtype, size and tokens, steps."""
    parameters = sum(p.numel() for p in pipe.transformer.parameters())
    dtype = str(next(pipe.transformer.parameters()).dtype).removeprefix("torch.")
    depth = f" (BENCH_REAL_SIZE_LAYERS; the real depth is {family.config[family.depth_key]})" if LAYERS else ""
    size = f"{'x'.join(str(v) for v in family.size.values())} ({'/'.join(family.size)})"
    return (f"{family.name} ({family.repo}): {family.transformer} {parameters / 1e9:.3f} B parameters, {blocks} blocks{depth}, "
            f"{dtype}, {size} -> {family.latent_tokens} latent tokens + {TEXT_TOKENS} text tokens, batch {family.batch}, "
            f"{family.transformer_calls} transformer call(s) per step, {STEPS} steps")


def table(described: str, measured: dict[str, Timings], shares, block_s: float, rows: dict[str, Row]) -> list[str]:
    """The family's table: how it was measured, then one line per variant."""
    together = measured["plans and compile"]
    untrusted = [f"{label}: {why}" for label, timings in measured.items() if (why := distrust(timings))]
    lines = [described + (f"  UNTRUSTED: {'; '.join(untrusted)}" if untrusted else ""),
             together.heading(),
             *(f"{label}: {timings.rounds} rounds; {precision_note(timings)}" for label, timings in measured.items()),
             f"plain call: {together.median('plain'):.2f} s ({together.wall_median('plain'):.2f} s wall); "
             f"{shares.transformer:.1%} in the transformer, {shares.blocks:.1%} in the block stacks; "
             f"one block forward {block_s * 1e3:.1f} ms",
             f"{'variant':26} {'speedup [95 % interval]':>24} {'cost/step in blocks [interval]':>31} {'compute':>8} "
             f"{'PSNR dB':>8} {'quantized MB':>15}"]
    for label, row in rows.items():
        low, ratio, high = row.speedup
        cost = "" if row.cost_blocks is None else "{1:+.3f} [{0:+.3f}, {2:+.3f}]".format(*row.cost_blocks)
        fraction = "" if row.compute_fraction is None else f"{row.compute_fraction:.3f}"
        weights = "" if row.weight_bytes is None else f"{row.weight_bytes[0] / 1e6:,.0f} -> {row.weight_bytes[1] / 1e6:,.0f}"
        lines.append(f"{label:26} {ratio:7.3f}x [{low:.3f}, {high:.3f}] {cost:>31} {fraction:>8} {row.psnr_db:8.2f} {weights:>15}")
    return lines


@pytest.mark.parametrize("name", list(FAMILIES))
def test_real_size_family(benchmark, name):
    started = time.perf_counter()
    family = FAMILIES[name]
    clock = bench_clock()
    pipe = family.build()
    call = lambda: pipe(**family.call())  # noqa: E731
    reference = output(pipe, family.call())
    handle = dit_engine.apply(pipe, "cache=none")  # the adapter, and the block forwards of one call
    output(pipe, family.call())
    adapter, blocks_total = handle.plan.adapter, handle.summary()["blocks_total"]
    handle.remove()
    shares = time_shares(pipe, adapter, call, clock, repeats=1)
    described = describe(family, pipe, blocks_total // (STEPS * family.transformer_calls))
    print(f"\n{described}\nclock: {clock.description}", flush=True)

    for label, overrides in NOTHING.items():  # identical outputs first: a fast wrong answer is no answer
        handle = dit_engine.apply(pipe, *overrides)
        try:
            assert torch.equal(output(pipe, family.call()), reference), f"{name}: {label} changed the output"
        finally:
            handle.remove()
    psnrs, fractions, weight_bytes = {label: math.inf for label in NOTHING}, {label: 1.0 for label in NOTHING}, {}
    for label, overrides in CACHES.items():
        handle = dit_engine.apply(pipe, *overrides)
        try:
            psnrs[label] = psnr(reference, output(pipe, family.call()))
            fractions[label] = handle.summary()["compute_fraction"]
        finally:
            handle.remove()
    compiled = twin(pipe)
    dit_engine.apply(compiled, *COMPILE["compile=regional"])
    began = time.perf_counter()
    psnrs["compile=regional"] = psnr(reference, output(compiled, family.call()))  # compiles the blocks
    print(f"compile=regional: the compiling call took {time.perf_counter() - began:.0f} s wall", flush=True)
    runners = {"plain": timing(call), **{label: planned(pipe, call, o) for label, o in {**NOTHING, **CACHES}.items()},
               "compile=regional": timing(lambda: compiled(**family.call()))}

    def quantized_rounds(label: str) -> Timings:
        """A quantized twin's quality, weight bytes and rounds against plain (freed on return)."""
        quantized = twin(pipe)
        stats = dit_engine.apply(quantized, *QUANT[label]).summary()["transforms"]["quantize.torchao"]
        weight_bytes[label] = (stats["weight_bytes_before"], stats["weight_bytes_after"])
        psnrs[label] = psnr(reference, output(quantized, family.call()))
        return interleaved({"plain": timing(call), label: timing(lambda: quantized(**family.call()))}, clock,
                           min_rounds=ROUNDS, max_rounds=ROUNDS, warmup=0)

    def measure() -> dict[str, Timings]:
        """Every removable plan and the compiled twin in one set of rounds (each ran once above:
        no warm-up round), then each quantized twin against plain in a set of its own, one
        quantized copy in memory at a time."""
        measured = {"plans and compile": interleaved(runners, clock, min_rounds=ROUNDS, max_rounds=ROUNDS, warmup=0)}
        for label in QUANT:
            measured[label] = quantized_rounds(label)
            gc.collect()
        return measured

    measured = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert torch.equal(output(pipe, family.call()), reference), f"{name}: the twins changed the shared weights"
    together = measured["plans and compile"]
    block_s = shares.blocks * together.median("plain") / blocks_total
    rows = {label: Row(together.interval(label), psnrs[label], compute_fraction=fractions.get(label),
                       cost_blocks=cost_in_blocks(together, label, block_s) if label in NOTHING else None)
            for label in {**NOTHING, **CACHES, **COMPILE}}
    rows.update({label: Row(measured[label].interval(label), psnrs[label], weight_bytes=weight_bytes[label]) for label in QUANT})
    TABLES.append("\n".join(table(described, measured, shares, block_s, rows)))
    for label, row in rows.items():
        benchmark.extra_info[label] = {
            "speedup_vs_plain": row.speedup[1], "speedup_interval": [row.speedup[0], row.speedup[2]], "psnr_db": row.psnr_db,
            "cost_per_step_blocks": row.cost_blocks, "compute_fraction": row.compute_fraction,
            "weight_bytes_before_after": row.weight_bytes}
    wall_s = time.perf_counter() - started
    benchmark.extra_info["family"] = {
        "described": described, "clock": clock.name, "plain_s": together.median("plain"), "block_forward_s": block_s,
        "transformer_share": shares.transformer, "block_share": shares.blocks, "rounds": ROUNDS, "wall_s": wall_s}
    print(f"{name}: measured in {wall_s / 60:.1f} min wall", flush=True)
    del pipe, compiled, runners
    torch._dynamo.reset()  # compiled code holds the twin (and the shared weights) alive
    gc.collect()


@pytest.mark.parametrize("name", ULYSSES_FAMILIES)
def test_ulysses_on_two_gloo_ranks(benchmark, name, tmp_path):
    """``parallel=ulysses2`` with the family's real head count on two gloo ranks against the
    single-process run of the same pipeline on each rank (benchmarks/real_size.py's worker)."""
    out = tmp_path / "ranks.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(Path(__file__).parent / "real_size.py"), name, str(out)]
    done = benchmark.pedantic(subprocess.run, args=(command,), kwargs=dict(
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=3600), rounds=1, iterations=1)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads(out.read_text())
    family, workload = FAMILIES[name], ranks[0]["workload"]
    lines = [f"parallel=ulysses2 on 2 gloo ranks: {name} ({family.repo}), {ranks[0]['heads']} heads, "
             f"{workload['attention_layers']} sharded attention layers, {workload['tokens']} tokens x batch "
             f"{workload['batch']}, {workload['calls']} transformer calls, fp{8 * workload['bytes_per_element']}",
             f"{'rank':>4} {'max |parallel - single|':>24} {'max |single|':>13} {'bytes sent':>12} {'model':>12} {'sent / model':>13}"]
    for rank in ranks:
        lines.append(f"{rank['rank']:4d} {rank['max_abs']:24.3g} {rank['reference_max_abs']:13.3g} {rank['bytes_sent']:12,d} "
                     f"{rank['predicted_bytes']:12,.0f} {rank['bytes_sent'] / rank['predicted_bytes']:13.4f}")
    benchmark.extra_info.update(ranks=ranks)
    TABLES.append("\n".join(lines))
    for rank in ranks:
        assert rank["max_abs"] <= 1e-3 * rank["reference_max_abs"], f"rank {rank['rank']} differs from the single process"
        # the model leaves out only the per-call exchange of chunk lengths (8 bytes per peer)
        assert abs(rank["bytes_sent"] / rank["predicted_bytes"] - 1) < 0.02, f"rank {rank['rank']} strays from the volume model"
