"""Outputs and cache decisions of every cache option, calibrator and method bundle, pinned.

Refactors must not change what any option computes. ``tests/data/output_pins.safetensors`` holds,
for every case below, the tiny model's float outputs and its cache decisions (the integer part of
``Handle.summary()``: blocks and steps computed, hit counts, per-step compute masks), recorded
before a refactor; this test recomputes both.

* Decisions must be identical everywhere: they are integers and masks, and a changed decision
  changes the output far beyond any kernel difference.
* Outputs must be bit-identical on the platform they were recorded on: the same CPU (vendor,
  family, model, model name and a hash of its feature flags), the same torch build and the same
  kernel set (``platform()``). Two CPUs with the same torch "CPU capability" still run different
  kernels (an AVX512 Xeon vs an AMD EPYC differ by ~1e-7), so anything less than all of that is
  another platform, where outputs must match within ``ATOL`` (max abs difference on images in
  [0, 1]): kernel noise passes, a real change (a dropped term, an off-by-one step) fails. Set
  ``DIT_ENGINE_PINS_TOLERANT=1`` to check as another platform would.

Pin a new option (existing pins are kept as they are): ``python tests/test_output_pins.py``.
Re-record every pin (only when a change of outputs is intended; say so in the commit):
``python tests/test_output_pins.py --all``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

PINS = Path(__file__).parent / "data" / "output_pins.safetensors"
PROMPTS = ["zero", "seven"]
STEPS = 28
#: Max abs difference allowed off the recording platform. Kernel differences between CPUs reach
#: ~1e-7 on these images (28 steps, values in [0, 1]); a real change moves them by >= 1e-3.
ATOL = 1e-5
TOLERANT_ENV = "DIT_ENGINE_PINS_TOLERANT"


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


def decisions(summary: Any) -> Any:
    """The exact part of ``Handle.summary()``: every integer, string and mask; floats (ratios
    derived from the integers) are left out."""
    if isinstance(summary, dict):
        return {k: decisions(v) for k, v in summary.items() if not isinstance(v, float)}
    if isinstance(summary, (list, tuple)):
        return [decisions(v) for v in summary if not isinstance(v, float)]
    return summary


def run_case(pipe, case: str, overrides: list[str]) -> tuple[torch.Tensor, dict]:
    """The case's output images (one gray channel) and its cache decisions."""
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
        summary = handle.summary()
    finally:
        handle.remove()
    # json round trip: the pinned form (tuples become lists)
    return images[:, :1].contiguous().float(), json.loads(json.dumps(decisions(summary)))


def _cpu() -> dict[str, str]:
    """The CPU model: /proc/cpuinfo's first processor (Linux), else what ``platform`` knows."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("vendor_id", "cpu family", "model", "model name", "stepping", "flags", "Features", "CPU implementer",
                   "CPU part", "CPU variant"):
            fields[key] = value.strip()
    for key in ("flags", "Features"):  # long: a hash is enough to tell two feature sets apart
        if key in fields:
            fields[key] = hashlib.sha256(" ".join(sorted(fields[key].split())).encode()).hexdigest()[:16]
    fields["processor"] = _platform.processor()
    fields["machine"] = _platform.machine()
    fields["system"] = _platform.system()
    return fields


def platform() -> dict[str, Any]:
    """What must be equal for outputs to be bit-identical: the CPU model and the torch build."""
    return {
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", ""),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": _cpu(),
    }


def exact_platform(recorded_on: dict) -> bool:
    """Whether outputs must be bit-identical here (the recording platform) or within ``ATOL``."""
    return os.environ.get(TOLERANT_ENV, "") in ("", "0") and recorded_on == platform()


def decision_changes(pinned: Any, got: Any, where: str = "summary") -> list[str]:
    """Where ``got`` differs from the pinned decisions. Keys the pin lacks are not compared, so a
    new counter in ``summary()`` needs no re-recording; a pinned key that went missing is a change."""
    if isinstance(pinned, dict) and isinstance(got, dict):
        return [change for key, value in pinned.items()
                for change in (decision_changes(value, got[key], f"{where}[{key!r}]") if key in got
                               else [f"{where}[{key!r}] is gone (pinned {json.dumps(value)})"])]
    return [] if pinned == got else [f"{where} is {json.dumps(got)}, pinned {json.dumps(pinned)}"]


def compare(case: str, output: torch.Tensor, got: dict, pinned: torch.Tensor, pinned_decisions: dict, exact: bool) -> list[str]:
    """What differs between a recomputed case and its pin (empty when it matches)."""
    problems = [f"{case}: cache decision changed: {d}" for d in decision_changes(pinned_decisions, got)]
    if output.shape != pinned.shape:
        return [*problems, f"{case}: output shape {tuple(output.shape)} != pinned {tuple(pinned.shape)}"]
    diff = (output.double() - pinned.double()).abs().max().item() if output.numel() else 0.0
    if exact:
        if not torch.equal(output, pinned):
            problems.append(f"{case}: output changed on the recording platform (max diff {diff:.3g}; bit-identical expected)")
    elif not diff <= ATOL:  # also catches NaN
        problems.append(f"{case}: output changed (max diff {diff:.3g} > {ATOL:g}, the tolerance off the recording platform)")
    return problems


def _load(path: Path = PINS):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as pins:
        meta = pins.metadata()
        tensors = {key: pins.get_tensor(key) for key in pins.keys()}
    return tensors, json.loads(meta["platform"]), json.loads(meta["cases"]), json.loads(meta.get("decisions", "{}"))


_CASES = cases()


@pytest.fixture(scope="module")
def pins():
    return _load()


@pytest.mark.parametrize("case", sorted(_CASES))
def test_outputs_match_the_pins(tiny_pipe, pins, case):
    overrides = _CASES[case]
    if _missing_peer(overrides):
        pytest.skip("cache-dit is not installed: pip install --no-deps cache-dit==1.5.3 to check this case")
    tensors, recorded_on, recorded_cases, recorded_decisions = pins
    assert case in tensors and case in recorded_decisions, f"no pin for {case}: regenerate with python tests/test_output_pins.py"
    assert recorded_cases[case] == overrides, f"{case} was pinned with other overrides: regenerate the pins"
    output, got = run_case(tiny_pipe, case, overrides)
    problems = compare(case, output, got, tensors[case], recorded_decisions[case], exact_platform(recorded_on))
    assert not problems, "\n".join(problems)


def test_every_shipped_option_is_pinned(pins):
    tensors, _, recorded, recorded_decisions = pins
    assert set(_CASES) <= set(recorded), f"unpinned cases: {sorted(set(_CASES) - set(recorded))}"
    assert set(recorded) == set(tensors) == set(recorded_decisions), "every pin needs its output and its decisions"


# The comparison itself: exact where the pins were made, tolerant elsewhere, never blind to a real change.

def _pinned_sample(pins, case="cache=dbcache"):
    tensors, recorded_on, _, recorded_decisions = pins
    return tensors[case].clone(), recorded_decisions[case], recorded_on


def test_the_exact_check_needs_the_same_cpu_model_and_torch_build(monkeypatch):
    monkeypatch.delenv(TOLERANT_ENV, raising=False)
    here = platform()
    assert exact_platform(here)
    # Same torch and CPU capability (what the key once was) but another CPU model: tolerant.
    for change in ({"model name": "Intel(R) Xeon(R) Platinum 8480+"}, {"flags": "0" * 16}, {"model": "143"}):
        other = json.loads(json.dumps(here))
        other["cpu"].update(change)
        assert other["cpu_capability"] == here["cpu_capability"] and not exact_platform(other), change
    assert not exact_platform({**here, "torch_git": "another build"})
    monkeypatch.setenv(TOLERANT_ENV, "1")
    assert not exact_platform(here)


def test_kernel_noise_passes_off_the_recording_platform_only(pins):
    pinned, pinned_decisions, _ = _pinned_sample(pins)
    noisy = pinned.clone()
    noisy.view(-1)[:: 7] += 1.19e-7  # what an AVX512 Xeon gives against the EPYC pins
    assert compare("c", noisy, pinned_decisions, pinned, pinned_decisions, exact=False) == []
    assert compare("c", noisy - 2.4e-7, pinned_decisions, pinned, pinned_decisions, exact=False) == []
    assert compare("c", noisy, pinned_decisions, pinned, pinned_decisions, exact=True)  # bits differ
    assert compare("c", pinned.clone(), pinned_decisions, pinned, pinned_decisions, exact=True) == []


@pytest.mark.parametrize("exact", [True, False])
def test_a_real_change_fails_everywhere(pins, exact):
    pinned, pinned_decisions, _ = _pinned_sample(pins)
    changed = pinned.clone()
    changed.view(-1)[123] += 1e-3
    assert any("output changed" in p for p in compare("c", changed, pinned_decisions, pinned, pinned_decisions, exact))
    nan = pinned.clone()
    nan.view(-1)[0] = float("nan")
    assert compare("c", nan, pinned_decisions, pinned, pinned_decisions, exact)
    # One flipped decision: the first cached step of the first branch computed instead.
    flipped = json.loads(json.dumps(pinned_decisions))
    branch = next(iter(flipped["transforms"]["cache.dbcache"]["branches"].values()))
    mask = branch["masks"][0]
    i = mask.index("0")
    branch["masks"][0] = mask[:i] + "1" + mask[i + 1:]
    problems = compare("c", pinned.clone(), flipped, pinned, pinned_decisions, exact)
    assert len(problems) == 1 and "cache decision changed: summary['transforms']['cache.dbcache']" in problems[0]
    fewer = {**pinned_decisions, "steps_cached": pinned_decisions["steps_cached"] - 1}
    assert compare("c", pinned.clone(), fewer, pinned, pinned_decisions, exact)
    gone = {k: v for k, v in pinned_decisions.items() if k != "blocks_computed"}
    assert compare("c", pinned.clone(), gone, pinned, pinned_decisions, exact)
    newer = {**pinned_decisions, "a_new_counter": 3}  # summary() may grow: no re-recording needed
    assert compare("c", pinned.clone(), newer, pinned, pinned_decisions, exact) == []
    assert compare("c", pinned[:1].clone(), pinned_decisions, pinned, pinned_decisions, exact)  # a lost image


@pytest.mark.slow
def test_other_kernels_pass_the_tolerant_check(pins):
    """Another CPU for real: torch's portable kernels (ATEN_CPU_CAPABILITY=default) instead of this
    CPU's vectorised ones change the last bits of every output but no decision."""
    sample = ["cache=dbcache", "cfg cache=scm", "cache=teacache calibrator=taylorseer"]
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(Path(__file__)), "--check", *sample], env=env, capture_output=True,
                            text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cpu_capability"] == "DEFAULT" and report["platform"] != pins[1]
    for case in sample:
        assert report["cases"][case]["problems"] == [], report["cases"][case]
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":  # kernels really differed (~1e-7 here)
        assert not all(report["cases"][case]["bit_identical"] for case in sample), report


def test_decisions_keep_integers_and_masks_only():
    summary = {"compute_fraction": 0.5, "steps_cached": 3, "transforms": {"x": {"masks": ["1010"], "hit_ratio": 0.25,
                                                                                "per_step": [1, 0.5, 2]}}}
    assert decisions(summary) == {"steps_cached": 3, "transforms": {"x": {"masks": ["1010"], "per_step": [1, 2]}}}


def regenerate(everything: bool, path: Path = PINS) -> None:
    from safetensors.torch import save_file

    from dit_engine.digits import load_digits_pipeline

    torch.set_num_threads(1)
    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    tensors, cases_done, decided = {}, {}, {}
    if path.exists() and not everything:
        tensors, recorded_on, cases_done, decided = _load(path)
        if recorded_on != platform():
            sys.exit(f"the pins were recorded on {recorded_on}, this is {platform()}: re-record all with --all")
    for case, overrides in sorted(_CASES.items()):
        if case in tensors and case in decided:
            continue
        if _missing_peer(overrides):
            sys.exit(f"{case} needs cache-dit: pip install --no-deps cache-dit==1.5.3")
        tensors[case], decided[case] = run_case(pipe, case, overrides)
        cases_done[case] = overrides
        print("pinned", case)
    path.parent.mkdir(exist_ok=True)
    meta = {"platform": json.dumps(platform()), "cases": json.dumps(cases_done), "decisions": json.dumps(decided)}
    save_file(tensors, str(path), metadata=meta)
    print(f"wrote {len(tensors)} pins to {path}")


def check(names: list[str]) -> dict[str, dict]:
    """Recompute cases (all when ``names`` is empty) and say how each compares with its pin here."""
    from dit_engine.digits import load_digits_pipeline

    torch.set_num_threads(1)
    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    tensors, recorded_on, _, decided = _load()
    exact, report = exact_platform(recorded_on), {}
    for case in names or sorted(_CASES):
        output, got = run_case(pipe, case, _CASES[case])
        report[case] = {
            "max_diff": (output.double() - tensors[case].double()).abs().max().item(),
            "bit_identical": torch.equal(output, tensors[case]),
            "problems": compare(case, output, got, tensors[case], decided[case], exact),
        }
    return report


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--check"]:  # python tests/test_output_pins.py --check ['case' ...]: JSON on the last line
        print(json.dumps({"platform": platform(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "cases": check(args[1:])}))
    else:
        regenerate(everything="--all" in args)
