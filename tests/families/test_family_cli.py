"""Every family's shipped YAML plans from the CLI without weights, and the plugin-facing docs
(docs/models.md) match the adapters and the test matrix."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from dit_engine.config import group_options
from dit_engine.testing import models_doc
from dit_engine.testing.zoo import load_zoo

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = [m for m in group_options("model", include_plugins=False) if m not in ("tiny", "auto")]


def test_every_family_prints_its_plan_without_weights(tmp_path):
    """``python -m dit_engine model=<family> dry_run=true`` for every family, as one sweep (one
    process: start-up dominates)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "dit_engine", "-m", f"model={','.join(FAMILIES)}", "cache=dbcache",
                             "dry_run=true"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    plans = result.stdout.split("dit_engine plan: ")[1:]
    assert len(plans) == len(FAMILIES)
    for family, plan in zip(FAMILIES, plans):
        assert plan.startswith(f"adapter '{family}'"), plan[:80]
        assert "cache.dbcache" in plan and " blocks (" in plan


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _matrix_ids() -> set[str]:
    """Every test id of the family matrix (what docs/models.md may claim)."""
    AUTO = _module(ROOT / "tests" / "families" / "test_auto_adapter.py").FAMILIES
    TestFamily = _module(ROOT / "tests" / "families" / "test_family_conformance.py").TestFamily
    names = [n for n in dir(TestFamily) if n.startswith("test_") and callable(getattr(TestFamily, n))]
    ids = {f"{name}[{variant}]" for name in names for variant in load_zoo()}
    ids |= {f"{models_doc.AUTO_TEST}[{variant}-{family}]" for variant, family in AUTO}
    parallel = _module(ROOT / "tests" / "parallel" / "test_parallel.py")
    ids |= {f"{models_doc.PARALLEL_TEST}[{case['id']}]" for case in parallel.ALL}
    return ids


def test_models_doc_is_generated_from_the_code_and_claims_only_matrix_tests():
    doc = models_doc.DOC.read_text()
    claims = models_doc.claimed_tests(doc)
    assert doc == models_doc.render(claims), "docs/models.md is out of date: run python -m dit_engine.testing.models_doc"
    unknown = claims - _matrix_ids()
    assert not unknown, f"docs/models.md claims tests the matrix does not have: {sorted(unknown)[:5]}"
    assert len(claims) > 200
