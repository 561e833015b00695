"""GPU check: FLUX.1-dev-size eager vs compile / fp8 / caches, on one H100 or H200, in about 8 minutes.

Not part of the test suite (it needs a GPU; ``tests/test_gpu_check_dry_run.py`` runs its dry run).

    python benchmarks/gpu_check.py --dry-run          # any machine, seconds: configuration and plans only
    python benchmarks/gpu_check.py                    # one GPU: writes gpu_check.json and gpu_check.md
    python benchmarks/gpu_check.py --loops 3 --budget-s 600 --out /tmp/h100.json

What runs: FLUX.1-dev's transformer configuration (19 double + 38 single blocks, 24 heads x 128,
11.9 B parameters) with random weights (seeded, the same in every variant), bf16, in a
``FluxPipeline`` with FLUX.1-dev's scheduler configuration and no VAE or text encoders, called with
random ``prompt_embeds`` (1, 512, 4096) and ``pooled_prompt_embeds`` (1, 768) at 1024 x 1024,
28 steps, guidance 3.5, ``output_type="latent"`` and a fixed generator.

Variants, each on a freshly built pipeline (quantization and compilation cannot be removed):
eager; ``compile=regional``; ``quant=fp8_dynamic``; fp8 + compile; and on top of fp8 + compile
``cache=dbcache`` and step forecasting (``cache=scm_static calibrator=taylorseer``). With two or
more GPUs, ``parallel=ulysses2`` and ``parallel=ring2`` (bf16, no compile) run too, each through
torchrun re-launching this script on 2 GPUs; on one GPU they are skipped with a note.
(``parallel=cfg2`` is left out: FLUX.1-dev is guidance-distilled, one transformer call per step,
so there is no second CFG branch to put on the other GPU.)

Each variant: 1 warm-up loop (compilation happens there), then ``--loops`` timed loops of 28
steps on the project's clock (``dit_engine.metrics.clock.CudaEventClock``: CUDA events around the
call, synchronized; wall seconds beside). Recorded per variant: median seconds per loop, median
wall, speedup vs eager, peak memory (``torch.cuda.max_memory_allocated`` from after the plan is
applied, so it counts the weights as they end up, fp8 included, plus activations, not the bf16
weights a quantized variant starts from), PSNR of the final latents vs eager's (see :func:`psnr`),
and the compute fraction from the handle (block forwards run / an uncached run's).

Time budget: a variant starts only while the elapsed time plus its estimate stays within
``--budget-s`` (default 450 s, for an 8-minute slot); the others are listed as skipped. Results are
written after every variant, so a run that is cut short still leaves its table.

``--dry-run`` needs no GPU: it builds the configuration on the meta device, prints the parameter
count and bf16 weight bytes, composes every variant's overrides and compiles each into a plan
against the meta pipeline for ``model.device=cuda``. Without CUDA the device checks of the plan
(fp8's compute capability >= 8.9, the GPU count of a parallel plan) cannot be made and are left
to the GPU run. Without ``--dry-run`` and without CUDA it exits 2.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# FLUX.1-dev's transformer configuration, shared with the parallel check (this script's folder is
# on sys.path when it runs, under torchrun too)
from gpu_parallel_check import FLUX_DEV

# FLUX.1-dev's scheduler configuration (its scheduler/scheduler_config.json)
FLUX_DEV_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                          base_image_seq_len=256, max_image_seq_len=4096)
HEIGHT = WIDTH = 1024
STEPS = 28
GUIDANCE = 3.5
TEXT_TOKENS = 512  # T5 sequence length of FLUX.1-dev
WEIGHT_SEED, EMBEDS_SEED, LATENTS_SEED = 0, 1, 2
WARMUP_LOOPS = 1
# What the first compiled variant costs beyond the variants measured before it (torch.compile of the
# blocks in its warm-up loop: about a minute on an H100); the budget adds it to that variant's estimate.
COMPILE_ALLOWANCE_S = 90.0
# A torchrun launch also starts 2 Python processes, imports torch and diffusers and opens NCCL.
LAUNCH_ALLOWANCE_S = 45.0


@dataclass(frozen=True)
class Variant:
    """One row of the table: ``overrides`` for ``dit_engine.apply`` (none: eager); ``parallel``: run
    on 2 GPUs through torchrun."""

    overrides: tuple[str, ...]
    parallel: bool = False

    @property
    def label(self) -> str:
        """The overrides as typed on the command line: the row's name in the table."""
        if not self.overrides:
            return "eager"
        return " ".join(self.overrides) + (" (2 GPUs)" if self.parallel else "")

    @property
    def compiles(self) -> bool:
        return any(o.startswith("compile=") for o in self.overrides)


FP8_COMPILE = ("quant=fp8_dynamic", "compile=regional")
SINGLE_GPU = (
    Variant(()),
    Variant(("compile=regional",)),
    Variant(("quant=fp8_dynamic",)),
    Variant(FP8_COMPILE),
    Variant(FP8_COMPILE + ("cache=dbcache",)),
    Variant(FP8_COMPILE + ("cache=scm_static", "calibrator=taylorseer")),  # step forecasting
)
PARALLEL = (
    Variant(("parallel=ulysses2",), parallel=True),
    Variant(("parallel=ring2",), parallel=True),
)
PSNR_DEFINITION = ("PSNR of the final packed latents (float32) against eager's, both divided by the largest "
                   "absolute value of eager's latents: 10 log10(1 / mean((x / s - ref / s)^2)), s = max |ref|; "
                   "null (shown as ∞) when they are equal")


# -- the pipeline ------------------------------------------------------------------------------


def build_pipeline(device: str | torch.device):
    """FLUX.1-dev's transformer with seeded random bf16 weights on ``device`` (``meta``: no memory),
    in a FluxPipeline with FLUX.1-dev's scheduler and no VAE or text encoders."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(WEIGHT_SEED)
    # Built in bf16 directly: built in float32 first, the 11.9 B weights would take 47.6 GB of GPU
    # memory before the cast.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**FLUX_DEV).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER), vae=None, text_encoder=None,
                        tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer)


def prompt_embeds(device: torch.device) -> dict[str, torch.Tensor]:
    """Random T5 and CLIP embeddings (the text encoders are not part of the check), drawn on the
    CPU from a fixed seed so every variant and every rank gets the same ones."""
    g = torch.Generator().manual_seed(EMBEDS_SEED)
    return {"prompt_embeds": torch.randn(1, TEXT_TOKENS, FLUX_DEV["joint_attention_dim"], generator=g).to(device, torch.bfloat16),
            "pooled_prompt_embeds": torch.randn(1, FLUX_DEV["pooled_projection_dim"], generator=g).to(device, torch.bfloat16)}


def generate(pipe, embeds: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """One 28-step loop; the final packed latents (1, 4096, 64)."""
    generator = torch.Generator(device).manual_seed(LATENTS_SEED)  # new each loop: every loop starts from the same noise
    with torch.no_grad():
        return pipe(**embeds, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    output_type="latent", generator=generator).images


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """PSNR in dB of ``other`` against ``reference`` (see PSNR_DEFINITION): latents have no fixed
    range like images' [0, 1], so both are scaled by the reference's largest absolute value."""
    reference, other = reference.float().cpu(), other.float().cpu()
    scale = reference.abs().max()
    mse = torch.mean(((reference - other) / scale) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def free_gpu() -> None:
    """Release the last variant's pipeline and compiled graphs before the next is built: two
    11.9 B-parameter pipelines would not fit, and dynamo's per-code caches would otherwise fill
    up with guards on modules that no longer exist (its recompile limit then falls back to eager)."""
    gc.collect()
    torch._dynamo.reset()
    torch.cuda.empty_cache()


def measure(variant: Variant, loops: int, device: torch.device, embeds: dict[str, torch.Tensor],
            reference: torch.Tensor | None) -> tuple[dict[str, Any], torch.Tensor]:
    """Build, apply, warm up and time one variant; its row and its final latents."""
    import dit_engine
    from dit_engine.metrics.clock import CudaEventClock

    began = time.perf_counter()
    pipe = build_pipeline(device)
    pipe.set_progress_bar_config(disable=True)
    handle = dit_engine.apply(pipe, "model=flux", *variant.overrides) if variant.overrides else None
    torch.cuda.synchronize(device)
    build_s = time.perf_counter() - began
    torch.cuda.reset_peak_memory_stats(device)

    began = time.perf_counter()
    for _ in range(WARMUP_LOOPS):
        generate(pipe, embeds, device)
    torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - began

    clock, readings, latents = CudaEventClock(device), [], []
    for _ in range(loops):
        readings.append(clock.time(lambda: latents.append(generate(pipe, embeds, device))))
    row = {
        "variant": variant.label,
        "overrides": list(variant.overrides),
        "seconds_per_loop": statistics.median(r.seconds for r in readings),
        "loop_seconds": [r.seconds for r in readings],
        "wall_s_per_loop": statistics.median(r.wall_s for r in readings),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "compute_fraction": handle.summary()["compute_fraction"] if handle is not None else 1.0,
        "build_s": build_s,
        "warmup_s": warmup_s,
    }
    final = latents[-1].float().cpu()
    if reference is not None:
        quality = psnr(reference, final)
        row["psnr_db"] = None if math.isinf(quality) else quality  # JSON has no infinity
    return row, final


# -- one GPU -----------------------------------------------------------------------------------


class Results:
    """The rows, skipped variants and header; written as JSON and markdown after every variant."""

    def __init__(self, out: Path, loops: int, budget_s: float):
        import diffusers

        import dit_engine
        from dit_engine.metrics.clock import CudaEventClock

        self.out, self.md = out, out.with_suffix(".md")
        self.data: dict[str, Any] = {
            "gpu": torch.cuda.get_device_name(0),
            "gpu_count": torch.cuda.device_count(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "dit_engine": dit_engine.__version__,
            "clock": f"{CudaEventClock.name}: {CudaEventClock.description}",
            "workload": {"model": "FLUX.1-dev transformer configuration, random weights, bf16", "height": HEIGHT,
                         "width": WIDTH, "steps": STEPS, "guidance_scale": GUIDANCE, "batch": 1,
                         "warmup_loops": WARMUP_LOOPS, "timed_loops": loops},
            "budget_s": budget_s,
            "psnr_definition": PSNR_DEFINITION,
            "rows": [],
            "skipped": [],
        }

    def add(self, row: dict[str, Any]) -> None:
        self.data["rows"].append(row)
        eager = next((r for r in self.data["rows"] if r["variant"] == "eager" and "seconds_per_loop" in r), None)
        if eager is not None and "seconds_per_loop" in row:
            row["speedup_vs_eager"] = eager["seconds_per_loop"] / row["seconds_per_loop"]

    def skip(self, label: str, reason: str) -> None:
        print(f"gpu_check: skipped {label}: {reason}", flush=True)
        self.data["skipped"].append({"variant": label, "reason": reason})

    def write(self, elapsed_s: float) -> None:
        self.data["elapsed_s"] = elapsed_s
        self.out.write_text(json.dumps(self.data, indent=2) + "\n")
        self.md.write_text(self.markdown())

    def markdown(self) -> str:
        d, w = self.data, self.data["workload"]
        lines = [f"# gpu_check: FLUX.1-dev-size transformer (random weights, bf16), {w['width']}x{w['height']}, {w['steps']} steps",
                 "",
                 f"GPU: {d['gpu']} ({d['gpu_count']} on the machine); torch {d['torch']}, diffusers {d['diffusers']}, "
                 f"dit_engine {d['dit_engine']}; clock: {d['clock']}. Medians of {w['timed_loops']} timed loops after "
                 f"{w['warmup_loops']} warm-up loop; {d['elapsed_s']:.0f} s in all (budget {d['budget_s']:.0f} s).",
                 "",
                 "| variant | s / loop (CUDA events) | wall s | speedup vs eager | peak GiB | PSNR vs eager | compute |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | failed: {r['error']} | | | | | |")
                continue
            speedup = f"{r['speedup_vs_eager']:.2f}" if "speedup_vs_eager" in r else "–"
            quality = "–" if "psnr_db" not in r else ("∞" if r["psnr_db"] is None else f"{r['psnr_db']:.1f} dB")
            lines.append(f"| {r['variant']} | {r['seconds_per_loop']:.3f} | {r['wall_s_per_loop']:.3f} | {speedup} | "
                         f"{r['peak_gib']:.1f} | {quality} | {100 * r['compute_fraction']:.1f} % |")
        lines += ["", f"PSNR: {PSNR_DEFINITION}. Peak: torch.cuda.max_memory_allocated over the warm-up and timed "
                      "loops, reset after the plan was applied (weights as applied plus activations)."]
        if d["skipped"]:
            lines += [""] + [f"- skipped {s['variant']}: {s['reason']}" for s in d["skipped"]]
        return "\n".join(lines) + "\n"


def run_parallel(variant: Variant, loops: int, reference_file: Path, timeout_s: float) -> dict[str, Any]:
    """``variant`` on 2 GPUs: torchrun starts this script twice (``--rank-run``); rank 0 writes its row."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        row_file = Path(work) / "row.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
                   "--rank-run", variant.overrides[0], "--loops", str(loops), "--reference", str(reference_file),
                   "--rank-out", str(row_file)]
        try:
            done = subprocess.run(command, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"variant": variant.label, "error": f"torchrun did not finish within {timeout_s:.0f} s"}
        if done.returncode != 0 or not row_file.is_file():
            return {"variant": variant.label, "error": f"torchrun exited {done.returncode} (its output is above)"}
        return json.loads(row_file.read_text())


def run_all(loops: int, budget_s: float, out: Path, started: float) -> None:
    """Every variant that fits the budget, one after another on GPU 0; the table after each."""
    device = torch.device("cuda", 0)
    results = Results(out, loops, budget_s)
    embeds = prompt_embeds(device)
    variants = list(SINGLE_GPU)
    if torch.cuda.device_count() >= 2:
        variants += PARALLEL
    else:
        for variant in PARALLEL:
            results.skip(variant.label, f"needs 2 GPUs, this machine has {torch.cuda.device_count()}")
    durations: list[float] = []  # whole variants, build to last loop: the estimate of the next
    compiled_yet = False
    reference: torch.Tensor | None = None
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        reference_file = Path(work) / "eager_latents.pt"
        for variant in variants:
            elapsed = time.perf_counter() - started
            estimate = max(durations, default=0.0)
            estimate += COMPILE_ALLOWANCE_S if variant.compiles and not compiled_yet else 0.0
            estimate += LAUNCH_ALLOWANCE_S if variant.parallel else 0.0
            if durations and elapsed + estimate > budget_s:
                results.skip(variant.label, f"budget: {elapsed:.0f} s elapsed + ~{estimate:.0f} s expected > {budget_s:.0f} s")
                continue
            if variant.parallel and reference is None:
                results.skip(variant.label, "no eager latents to compare with (eager failed)")
                continue
            print(f"gpu_check: {variant.label} ({elapsed:.0f} s elapsed)", flush=True)
            began = time.perf_counter()
            if variant.parallel:
                row = run_parallel(variant, loops, reference_file, timeout_s=budget_s - elapsed + LAUNCH_ALLOWANCE_S)
            else:
                try:
                    row, latents = measure(variant, loops, device, embeds, reference)
                except Exception as err:  # one failed variant (OOM, a compile error) must not lose the others' rows
                    first_line = (str(err).strip().splitlines() or [""])[0]
                    row = {"variant": variant.label, "error": f"{type(err).__name__}: {first_line}"}
                else:
                    if variant.label == "eager":
                        reference = latents
                        torch.save(reference, reference_file)
                        row["psnr_db"] = None  # eager against itself
                free_gpu()
            durations.append(time.perf_counter() - began)
            compiled_yet = compiled_yet or variant.compiles
            results.add(row)
            results.write(time.perf_counter() - started)
            print(f"gpu_check: {json.dumps(row)}", flush=True)
    print(results.markdown(), end="")
    print(f"gpu_check: wrote {results.out} and {results.md}")


def rank_run(mode: str, loops: int, reference_file: Path, row_file: Path) -> None:
    """One torchrun rank of a parallel variant: every rank runs the same loops; rank 0 writes the row."""
    import torch.distributed as dist

    rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    variant = next(v for v in PARALLEL if v.overrides[0] == mode)
    row, _ = measure(variant, loops, device, prompt_embeds(device), torch.load(reference_file))
    if rank == 0:
        row_file.write_text(json.dumps(row))
    if dist.is_initialized():
        dist.destroy_process_group()


# -- dry run -----------------------------------------------------------------------------------


def dry_run(loops: int, budget_s: float, out: Path) -> int:
    """Configuration, parameter count and plans, on the meta device; 0 when every plan compiled."""
    from dit_engine.errors import DitEngineError
    from dit_engine.metrics.clock import CudaEventClock
    from dit_engine.session import Session

    pipe = build_pipeline("meta")
    parameters = list(pipe.transformer.parameters())
    count = sum(p.numel() for p in parameters)
    weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
    print("gpu_check dry run: FLUX.1-dev transformer configuration on the meta device (no weights allocated)")
    print(f"  parameters: {count:,} ({count / 1e9:.2f} B); bf16 weights: {weight_bytes:,} bytes "
          f"({weight_bytes / 1e9:.2f} GB, {weight_bytes / 2**30:.2f} GiB)")
    print(f"  would measure: {WIDTH}x{HEIGHT}, {STEPS} steps, guidance {GUIDANCE}, batch 1, prompt_embeds "
          f"(1, {TEXT_TOKENS}, {FLUX_DEV['joint_attention_dim']}), output_type=latent; {WARMUP_LOOPS} warm-up loop + "
          f"{loops} timed loop(s) per variant; budget {budget_s:.0f} s; clock {CudaEventClock.name} ({CudaEventClock.description})")
    print("  records: seconds per loop (CUDA events, median), wall, speedup vs eager, peak GiB, PSNR vs eager, compute fraction")
    print(f"  writes: {out} and {out.with_suffix('.md')}")
    if torch.cuda.is_available():
        print(f"  plans for model.device=cuda on this machine's {torch.cuda.get_device_name(0)}:")
    else:
        print("  plans composed and compiled for model.device=cuda; no CUDA here, so the plan's device checks "
              "(fp8's compute capability, a parallel plan's GPU count) are left to the GPU run:")
    gpus = torch.cuda.device_count()
    refused = 0
    for variant in SINGLE_GPU + PARALLEL:
        if not variant.overrides:
            print(f"    {variant.label}: no plan: the pipeline as built")
            continue
        if variant.parallel and torch.cuda.is_available() and gpus < 2:
            print(f"    {variant.label}: skipped: {gpus} GPU here, needs 2")
            continue
        try:
            session = Session.from_overrides(["model=flux", "model.device=cuda", *variant.overrides]).prepare(pipe, "flux")
        except DitEngineError as err:
            refused += 1
            print(f"    {variant.label}: REFUSED: {err}")
        else:
            launch = " (torchrun, 2 ranks)" if variant.parallel else ""
            print(f"    {variant.label}: plan ok{launch}: {', '.join(step.name for step in session.plan.steps)}")
    return 1 if refused else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU: configuration, parameter count and plans only")
    parser.add_argument("--loops", type=int, default=2, help="timed 28-step loops per variant (default 2)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="skip the variants that would end past this many seconds (default 450)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"),
                        help="JSON results; the markdown table goes beside it with .md (default gpu_check.json)")
    # the torchrun re-launch of a parallel variant (run_parallel), not for direct use
    parser.add_argument("--rank-run", help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rank-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loops < 1:
        parser.error("--loops must be at least 1")
    started = time.perf_counter()
    if args.dry_run:
        return dry_run(args.loops, args.budget_s, args.out)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; use --dry-run to check the configuration and plans without one",
              file=sys.stderr)
        return 2
    if args.rank_run:
        rank_run(args.rank_run, args.loops, args.reference, args.rank_out)
        return 0
    run_all(args.loops, args.budget_s, args.out, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
