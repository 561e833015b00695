"""What a wheel ships: every package and every data file, from a non-editable install too.

The fast tests ask setuptools (setup.py + pyproject.toml, no build) which packages and data files it
would put in the wheel; the slow one builds and installs it. ``.ci/wheel_smoke.sh`` (run by CI)
goes further: a wheel in a fresh venv that cannot see the editable install, every entry point run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: folder in the repo -> import name (pyproject.toml's [tool.setuptools.package-dir])
ROOTS = {"dit_engine": "dit_engine", "conf": "dit_engine.conf", "adapters": "dit_engine_adapters"}
#: files the code never opens: left out of the wheel on purpose
NOT_SHIPPED = (".py", ".pyc", ".md")


def repo_packages() -> dict[str, Path]:
    """Import name -> folder of every package in the repo (a folder with ``__init__.py``)."""
    found = {}
    for folder, name in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found[".".join([name, *rel.parts])] = init.parent
    return found


def data_files() -> dict[str, Path]:
    """Path inside the installed tree -> repo file, for every non-Python file under a package root."""
    files = {}
    for folder, name in ROOTS.items():
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in NOT_SHIPPED:
                files["/".join([*name.split("."), *path.relative_to(REPO / folder).parts])] = path
    return files


@pytest.fixture(scope="module")
def distribution():
    """setuptools' view of the project: setup.py run up to its configuration, no build."""
    import setuptools  # noqa: F401  (its distutils)
    from distutils.core import run_setup

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return run_setup("setup.py", stop_after="config")
    finally:
        os.chdir(cwd)


def test_every_package_is_found(distribution):
    packages = set(distribution.packages)
    assert {"dit_engine.serve", "dit_engine.testing.zoo", "dit_engine.conf", "dit_engine_adapters"} <= packages
    missing = sorted(set(repo_packages()) - packages)
    assert not missing, f"packages setuptools leaves out of the wheel: {missing}"
    assert packages == set(repo_packages()), f"packages not in the repo: {sorted(packages - set(repo_packages()))}"


def test_every_package_maps_to_its_folder(distribution):
    package_dir = distribution.package_dir
    for name, folder in repo_packages().items():
        base = max((p for p in package_dir if name == p or name.startswith(p + ".")), key=len)
        mapped = REPO / package_dir[base] / Path(*name[len(base):].lstrip(".").split(".")) if name != base \
            else REPO / package_dir[base]
        assert mapped.resolve() == folder.resolve(), f"{name} builds from {mapped}, not {folder}"


def test_every_data_file_is_package_data(distribution):
    """Config YAMLs, tiny weights and the rest: each matched by a package_data pattern of its package."""
    packages = repo_packages()
    shipped = set()
    for package, patterns in distribution.package_data.items():
        folder = packages[package]
        for pattern in patterns:
            shipped |= {p.resolve() for p in folder.glob(pattern) if p.is_file()}
    missing = sorted(str(path.relative_to(REPO)) for path in data_files().values() if path.resolve() not in shipped)
    assert not missing, f"data files not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
    assert any(p.endswith("digits/weights/tiny_dit.safetensors") for p in data_files())
    assert any(p.endswith("conf/cache/dbcache.yaml") for p in data_files())


@pytest.mark.slow
def test_non_editable_install_ships_everything_and_dry_runs(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(REPO)],
        check=True, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    for name, folder in repo_packages().items():
        installed = target.joinpath(*name.split("."))
        for module in folder.glob("*.py"):
            assert (installed / module.name).is_file(), f"{name}: {module.name} is not in the wheel"
    missing = sorted(rel for rel in data_files() if not (target / rel).is_file())
    assert not missing, f"data files not installed: {missing}"
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "import dit_engine, dit_engine.serve, sys; print(dit_engine.serve.__file__)"],
        env=env, cwd=work, capture_output=True, text=True, timeout=120,
    )
    assert str(target) in result.stdout, result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "dit_engine", "cache=fbcache", "dry_run=true", "hydra.run.dir=dry"],
        env=env, cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "DBCache F1B0 over 12 blocks" in result.stdout
