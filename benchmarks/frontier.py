"""The step-forecasting frontier: PSNR against the uncached images at a ninth, a fifth and a quarter
of the steps computed, for each forecaster, layout rule and a planned schedule.

Quality and compute only (both deterministic on CPU); the speed of these methods is measured by
the sweeps of docs/caches.md on the trusted clock. Three trajectories:

* ``embedded``: the embedded digits model (trained) with its own, unshifted schedule;
* ``embedded_shift3``: the same model with a FLUX-like shifted schedule (shift 3): a trained model
  on a schedule neither the layout rule nor the forecasters were tuned on;
* ``tiny_flux``: the tiny FLUX pipeline (random weights, FLUX's own shifted schedule).

Planned schedules are planned on other seeds than the images compared (seeds 1000 on), so the plan
never sees the trajectories it is judged on. Images are compared like ``report=quality`` does
(8-bit images, mean of the per-image PSNR).

    python benchmarks/frontier.py                       # 28 and 50 steps, every model: a markdown table
    python benchmarks/frontier.py --steps 28 --models embedded
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import dit_engine
from dit_engine.metrics.quality import compare_images, summarize

BUDGETS = (0.11, 0.18, 0.25)
PLAN_SEED = 1000

#: method label -> overrides (``{budget}`` and ``{schedule}`` filled in per cell)
METHODS = {
    "TaylorSeer, step layout": ["cache=scm_static", "calibrator=taylorseer", "cache.budget={budget}"],
    "FoCa, step layout": ["cache=scm_static", "calibrator=foca", "cache.budget={budget}"],
    "Spectrum, step layout": ["cache=scm_static", "calibrator=spectrum", "cache.budget={budget}"],
    "Spectrum, sigma layout (`step_spectrum_ultra`)": ["cache=scm_static", "calibrator=spectrum", "cache.budget={budget}",
                                                   "cache.layout=sigmas"],
    "Spectrum, planned schedule": ["cache=scm_static", "calibrator=spectrum", "cache.budget={budget}",
                                   "cache.schedule={schedule}"],
}


def embedded(shift: float | None = None):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from dit_engine.digits import CLASS_NAMES, load_digits_pipeline

    pipe = load_digits_pipeline()
    if shift is not None:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=shift)

    def call(steps: int, seed: int):
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(CLASS_NAMES))]
        return pipe(prompt=list(CLASS_NAMES), num_inference_steps=steps, generator=generators, output_type="pil").images

    return pipe, call


def tiny_flux():
    from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs

    pipe = build_tiny_flux_pipeline(seed=0)

    def call(steps: int, seed: int):
        kwargs = tiny_flux_call_kwargs(prompt=["a red fox", "a blue bird", "a green tree", "a yellow car"], num_inference_steps=steps)
        kwargs["generator"] = torch.Generator().manual_seed(seed)
        kwargs["output_type"] = "pil"
        return pipe(**kwargs).images

    return pipe, call


MODELS = {"embedded": lambda: embedded(), "embedded_shift3": lambda: embedded(3.0), "tiny_flux": tiny_flux}


def plan(pipe, call, steps: int, directory: Path) -> str:
    """A Spectrum schedule for ``BUDGETS`` from one uncached run on the planning seeds."""
    handle = dit_engine.apply(pipe, "cache=plan_steps", "calibrator=spectrum", f"cache.budgets=[{','.join(map(str, BUDGETS))}]")
    try:
        call(steps, PLAN_SEED)
        data = next(t for t in handle.transforms if t.name == "cache.plan_steps").artifacts()["schedule.json"]
    finally:
        handle.remove()
    path = directory / f"schedule_{steps}.json"
    path.write_text(json.dumps(data))
    return str(path)


def measure(model: str, steps: int, directory: Path) -> list[dict]:
    pipe, call = MODELS[model]()
    pipe.set_progress_bar_config(disable=True)
    reference = call(steps, 0)
    names = [f"{i:03d}" for i in range(len(reference))]
    started = time.process_time()
    schedule = plan(pipe, call, steps, directory)
    print(f"# {model}, {steps} steps: planned in {time.process_time() - started:.0f} s CPU", file=sys.stderr)
    rows = []
    for label, template in METHODS.items():
        for budget in BUDGETS:
            overrides = [o.format(budget=budget, schedule=schedule) for o in template]
            handle = dit_engine.apply(pipe, *overrides)
            try:
                images = call(steps, 0)
                compute = handle.summary()["compute_fraction"]
                stats = handle.summary()["transforms"]["cache.scm"]
            finally:
                handle.remove()
            quality = summarize(compare_images(names, reference, images))
            mask = stats["branches"]["transformer/cfg0"]["masks"][0]
            rows.append({"model": model, "steps": steps, "method": label, "budget": budget, "compute": compute,
                         "psnr": quality["psnr"], "computed": [i for i, bit in enumerate(mask) if bit == "1"]})
            print(f"{model} {steps} {label} {budget}: {compute:.3f} {quality['psnr']:.2f} dB {rows[-1]['computed']}",
                  file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    budgets = sorted({(r["steps"], r["budget"]) for r in rows})
    header = "| model | method | " + " | ".join(f"{steps} steps, {b:g}" for steps, b in budgets) + " |"
    lines = [header, "|---|---|" + "---:|" * len(budgets)]
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in METHODS:
            cells = []
            for steps, budget in budgets:
                found = [r for r in rows if r["model"] == model and r["method"] == method and r["steps"] == steps and r["budget"] == budget]
                cells.append(f"{found[0]['psnr']:.2f} ({found[0]['compute']:.3f})" if found else "")
            lines.append(f"| {model} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[28, 50])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--json", type=Path, help="also write the cells here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for model in args.models:
            for steps in args.steps:
                rows += measure(model, steps, Path(directory))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
