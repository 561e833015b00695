"""Outputs of every cache option, calibrator and method bundle, pinned.

Refactors must not change what any option computes. ``tests/data/output_pins.safetensors`` holds
the tiny model's float outputs for every case below, recorded before a refactor; this test
recomputes them. On the platform they were recorded on (same torch version and CPU capability)
they must be bit-identical. Elsewhere, floating-point kernels differ in their last bits and a
cache decision right at its threshold may flip, so the check there is PSNR >= 30 dB against
the pinned images (the test says which check ran).

Pin a new option (existing pins are kept as they are): ``python tests/test_output_pins.py``.
Re-record every pin (only when a change of outputs is intended; say so in the commit):
``python tests/test_output_pins.py --all``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

PINS = Path(__file__).parent / "data" / "output_pins.safetensors"
PROMPTS = ["zero", "seven"]
STEPS = 28


def _options(group: str) -> list[str]:
    from dit_engine.config import group_options

    return group_options(group, include_plugins=False)


def cases() -> dict[str, list[str]]:
    """Case id -> overrides. ``cfg`` cases run two CFG calls per step (separate branches)."""
    found: dict[str, list[str]] = {}
    for option in _options("cache"):
        found[f"cache={option}"] = [f"cache={option}"]
    for option in _options("method"):
        found[f"+method={option}"] = [f"+method={option}"]
    for cache in ("dbcache", "scm", "scm_static", "teacache", "magcache"):
        for calibrator in ("taylorseer", "abcache"):
            found[f"cache={cache} calibrator={calibrator}"] = [f"cache={cache}", f"calibrator={calibrator}"]
    found["cache=scm calibrator=taylorseer order=2"] = ["cache=scm", "calibrator=taylorseer", "calibrator.order=2"]
    found["cache=dbcache_slow F2B1 max_continuous=2"] = ["cache=dbcache", "cache.front_blocks=2", "cache.back_blocks=1",
                                                          "cache.max_continuous_cached_steps=2"]
    found["cache=scm mask"] = ["cache=scm", "cache.mask=1110101001", "cache.policy=static"]
    for case, overrides in list(found.items()):
        if case.startswith(("cache=dbcache", "cache=scm", "cache=dbprune", "cache=teacache", "cache=magcache", "cache=none")):
            found[f"cfg {case}"] = overrides
    found["cfg cache=dbcache separate_cfg=false"] = ["cache=dbcache", "cache.separate_cfg=false"]
    return found


def _missing_peer(overrides: list[str]) -> bool:
    import importlib.util

    needs_cachedit = any("cachedit" in o for o in overrides)
    return needs_cachedit and importlib.util.find_spec("cache_dit") is None


def run_case(pipe, case: str, overrides: list[str]) -> torch.Tensor:
    import dit_engine

    from dit_engine.config import compose_config

    cfg = case.startswith("cfg ")
    if compose_config(overrides).cache.name == "diffusers_magcache":  # diffusers needs the step count up front
        overrides = [*overrides, f"cache.num_inference_steps={STEPS}"]
    handle = dit_engine.apply(pipe, *overrides)
    try:
        images = pipe(
            prompt=PROMPTS,
            num_inference_steps=STEPS,
            guidance_scale=3.0 if cfg else 1.0,
            separate_cfg=cfg,
            generator=[torch.Generator().manual_seed(i) for i in range(len(PROMPTS))],
            output_type="pt",
        ).images
    finally:
        handle.remove()
    return images[:, :1].contiguous().float()  # the RGB channels are one gray channel repeated


def platform() -> dict[str, str]:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _load():
    from safetensors import safe_open

    with safe_open(str(PINS), framework="pt") as pins:
        meta = pins.metadata()
        return {key: pins.get_tensor(key) for key in pins.keys()}, json.loads(meta["platform"]), json.loads(meta["cases"])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


_CASES = cases()


@pytest.mark.parametrize("case", sorted(_CASES))
def test_outputs_match_the_pins(tiny_pipe, case):
    overrides = _CASES[case]
    if _missing_peer(overrides):
        pytest.skip("cache-dit is not installed: pip install --no-deps cache-dit==1.5.3 to check this case")
    pins, recorded_on, recorded_cases = _load()
    assert case in pins, f"no pin for {case}: regenerate with python tests/test_output_pins.py"
    assert recorded_cases[case] == overrides, f"{case} was pinned with other overrides: regenerate the pins"
    output = run_case(tiny_pipe, case, overrides)
    if recorded_on == platform():
        assert torch.equal(output, pins[case]), f"{case}: output changed (max diff {(output - pins[case]).abs().max():.3g})"
    else:
        assert _psnr(pins[case], output) >= 30.0, f"{case}: {_psnr(pins[case], output):.1f} dB against the pin"


def test_every_shipped_option_is_pinned():
    recorded = _load()[2]
    assert set(_CASES) <= set(recorded), f"unpinned cases: {sorted(set(_CASES) - set(recorded))}"


def regenerate(everything: bool) -> None:
    from safetensors.torch import save_file

    from dit_engine.tiny import load_tiny_pipeline

    torch.set_num_threads(1)
    pipe = load_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    tensors, cases_done = {}, {}
    if PINS.exists() and not everything:
        tensors, recorded_on, cases_done = _load()
        if recorded_on != platform():
            sys.exit(f"the pins were recorded on {recorded_on}, this is {platform()}: re-record all with --all")
    for case, overrides in sorted(_CASES.items()):
        if case in tensors:
            continue
        if _missing_peer(overrides):
            sys.exit(f"{case} needs cache-dit: pip install --no-deps cache-dit==1.5.3")
        tensors[case] = run_case(pipe, case, overrides)
        cases_done[case] = overrides
        print("pinned", case)
    PINS.parent.mkdir(exist_ok=True)
    save_file(tensors, str(PINS), metadata={"platform": json.dumps(platform()), "cases": json.dumps(cases_done)})
    print(f"wrote {len(tensors)} pins to {PINS}")


if __name__ == "__main__":
    regenerate(everything="--all" in sys.argv[1:])
