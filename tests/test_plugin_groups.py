"""A plugin adds a config group (a new stage) through the ``dit_engine.groups`` entry point.

The fixture plugin lives in tests/data/sampler_plugin; its entry points are added to the installed
ones in a fresh interpreter (the table of groups is read once per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).parent / "data" / "sampler_plugin"

SCRIPT = r"""
import json, sys
import importlib.metadata as metadata
from importlib.metadata import EntryPoint

sys.path.insert(0, sys.argv[1])
installed = metadata.entry_points
extra = {
    "dit_engine.groups": [EntryPoint("sampler", "sampler_plugin.groups:SAMPLER", "dit_engine.groups")],
    "dit_engine.conf": [EntryPoint("sampler_plugin", "sampler_plugin.conf", "dit_engine.conf")],
    "dit_engine.transforms": [EntryPoint("sample.fancy", "sampler_plugin.transform:FancyTransform", "dit_engine.transforms")],
}

def entry_points(**selection):
    return [*installed(**selection), *extra.get(selection.get("group"), [])]

import dit_engine.config.groups, dit_engine.config.options, dit_engine.registry
for module in (dit_engine.config.groups, dit_engine.config.options, dit_engine.registry):
    module.entry_points = entry_points

from dit_engine.config import compose_config
from dit_engine.errors import ConfigError, PlanError
from dit_engine.session import Session

out = {"default": compose_config([]).sampler.name}
session = Session(compose_config(["sampler=fancy", "sampler.strength=3", "dry_run=true"])).prepare()
out["steps"] = [(step.stage.name, step.name, step.group) for step in session.plan.steps]
out["strength"] = session.plan.steps[[s.name for s in session.plan.steps].index("sample.fancy")].config.strength
out["explain"] = session.plan.explain()
try:
    Session(compose_config(["sampler=fancy", "sampler.strength=0", "dry_run=true"])).prepare()
except PlanError as err:
    out["refused"] = str(err)
try:
    compose_config(["sampler=nope"])
except ConfigError as err:
    out["unknown"] = str(err)
print(json.dumps(out))
"""


def test_a_plugin_group_composes_plans_and_checks_at_its_own_stage():
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(PLUGIN)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["default"] == "none"
    stages = [stage for stage, _, _ in out["steps"]]
    assert ("SAMPLE", "sample.fancy", "sampler") in map(tuple, out["steps"])
    assert stages.index("SAMPLE") == stages.index("ADAPT") + 1  # between ADAPT (30) and CACHE (40)
    assert out["strength"] == 3
    assert "ADAPT < SAMPLE < CACHE" in out["explain"]
    assert "sampler.strength must be positive" in out["refused"]
    assert out["unknown"].startswith("unknown option sampler=nope; available sampler options: fancy, none")
