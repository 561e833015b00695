"""Hash what every shipped option plans and computes: the proof a refactor preserved behaviour.

For every option of every config group (and every method bundle and experiment) this composes the
option, plans it (dry run) and records the plan (steps, stages, resolved step configs, the
``explain()`` lines without plugin versions). For the options the tiny model can run here in a
second (no parallel ranks, no torch.compile) it also runs two prompts for a few steps and records
a SHA-256 of the output images and of the cache decisions.

    python tests/option_hashes.py before.json        # on the old code
    python tests/option_hashes.py after.json         # on the new code
    python tests/option_hashes.py --diff before.json after.json

Options are matched by name, so an option that was renamed or folded into another shows up as
"only before" / "only after": each such line must be accounted for in the change's note.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from typing import Any

#: Groups whose options are run on the tiny model, not just planned.
RUN_GROUPS = ("cache", "calibrator", "attention", "quant", "offload", "workload", "report", "method")
STEPS = 6


def _options(group: str) -> list[str]:
    from dit_engine.config import group_options

    return group_options(group, include_plugins=False)


def cells() -> dict[str, list[str]]:
    """Cell id -> overrides: every option of every group, each alone (plus what it needs)."""
    from dit_engine.config.groups import group_names

    found: dict[str, list[str]] = {}
    for group in [*group_names(), "method", "experiment"]:
        for option in _options(group):
            prefix = "+" if group in ("method", "experiment") else ""
            overrides = [f"{prefix}{group}={option}"]
            if group == "calibrator" and option != "none":
                overrides.append("cache=dbcache")
            if group == "parallel" and option.startswith("cfg"):
                overrides.append("workload.guidance_scale=3")
            if group == "parallel" and option == "auto":
                overrides.append("parallel.world_size=2")
            found[f"{group}={option}"] = overrides
    return found


def _plan_record(session) -> dict[str, Any]:
    lines = session.plan.explain().splitlines()
    # plugin versions and the facts' source path vary by install, not by behaviour
    lines = [re.sub(r"(dit[-_]engine[-_\w]*|cache-dit|[\w-]+) \d+[\w.+-]*\]", r"\1]", line) for line in lines]
    return {"explain": lines, "steps": session.plan.as_dict(), "world_size": session.plan.world_size}


def _embedded_pipeline():
    """The embedded default model (its package was renamed from ``tiny`` to ``digits``)."""
    try:
        from dit_engine.digits import load_digits_pipeline as load
    except ImportError:
        from dit_engine.tiny import load_tiny_pipeline as load
    pipe = load()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run_record(overrides: list[str]) -> dict[str, Any]:
    import torch

    import dit_engine
    pipe = _embedded_pipeline()
    handle = dit_engine.apply(pipe, *overrides)
    try:
        images = pipe(prompt=["zero", "seven"], num_inference_steps=STEPS, guidance_scale=1.0,
                      generator=[torch.Generator().manual_seed(i) for i in range(2)], output_type="pt").images
        summary = handle.summary()
    finally:
        handle.remove()
    exact = {k: v for k, v in summary.items() if not isinstance(v, float)}
    return {"images": hashlib.sha256(images.float().numpy().tobytes()).hexdigest()[:16],
            "decisions": hashlib.sha256(json.dumps(exact, sort_keys=True, default=str).encode()).hexdigest()[:16]}


def record() -> dict[str, Any]:
    import torch

    from dit_engine.config import compose_config
    from dit_engine.errors import DitEngineError
    from dit_engine.session import Session

    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    for cell, overrides in cells().items():
        entry: dict[str, Any] = {"overrides": overrides}
        try:
            session = Session(compose_config([*overrides, "dry_run=true"])).prepare()
            entry["plan"] = _plan_record(session)
        except DitEngineError as err:
            entry["refused"] = str(err)
        except Exception as err:  # noqa: BLE001 - recorded, so a change in what fails shows
            entry["error"] = f"{type(err).__name__}: {err}"
        group = cell.partition("=")[0]
        if "plan" in entry and group in RUN_GROUPS and session.plan.world_size == 1 \
                and not any(step.name.startswith("compile.") for step in session.plan.steps):
            try:
                entry["run"] = _run_record([o for o in overrides if not o.startswith(("+experiment", "report=", "workload="))])
            except Exception as err:  # noqa: BLE001
                entry["run_error"] = f"{type(err).__name__}: {str(err)[:200]}"
        out[cell] = entry
        print(f"{cell}: {'run' if 'run' in entry else 'plan' if 'plan' in entry else 'refused/error'}", file=sys.stderr)
    return out


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    lines = [f"only before: {c}" for c in before if c not in after] + [f"only after: {c}" for c in after if c not in before]
    for cell in before:
        if cell in after:
            for key in sorted(set(before[cell]) | set(after[cell])):
                if before[cell].get(key) != after[cell].get(key):
                    lines.append(f"{cell}: {key} differs:\n  before {json.dumps(before[cell].get(key))[:600]}\n"
                                 f"  after  {json.dumps(after[cell].get(key))[:600]}")
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--diff"]:
        changes = diff(*(json.load(open(path)) for path in sys.argv[2:4]))
        print("\n".join(changes) or "no differences")
        sys.exit(1 if changes else 0)
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/option_hashes.py OUT.json | --diff BEFORE.json AFTER.json")
    recorded = record()  # peers print to stdout: the record goes to its own file
    with open(sys.argv[1], "w") as out:
        json.dump(recorded, out, indent=1, sort_keys=True)
