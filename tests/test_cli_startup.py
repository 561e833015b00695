"""``--help`` and shell completion: fast (no torch, diffusers or transformers imported: checked
from ``python -X importtime``, not from the clock), schemas left out, and tab completion that works
for ``python -m dit_engine`` and the ``dit-engine`` command in a real bash."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: what --help and completion must not import (each takes seconds)
HEAVY = ("torch", "diffusers", "transformers", "scipy", "matplotlib")
BIN = Path(sys.executable).parent


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def imported(stderr: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` output."""
    names = set()
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", line)
        if match:
            names.add(match.group(1).split(".")[0])
    return names


def run_module(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "dit_engine", *args], cwd=cwd, env=env(**extra_env),
                          capture_output=True, text=True, timeout=300)


def test_help_imports_no_heavy_library_and_lists_no_schema(tmp_path):
    result = run_module("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported(result.stderr)
    assert "dit_engine" in modules and "hydra" in modules  # the importtime output was read
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    groups = dict(line.split(": ", 1) for line in result.stdout.split("== Config ==")[0].splitlines() if ": " in line)
    assert "dbcache" in groups["cache"].split(", ") and "taylorseer" in groups["calibrator"].split(", ")
    assert "schema_" not in result.stdout.split("== Config ==")[0]
    assert "front_blocks: 1" in result.stdout  # the default config (cache=none's schema) is still shown
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_completion_query_for_python_dash_m_imports_no_heavy_library(tmp_path):
    line = "python -m dit_engine cache="
    result = run_module("-sc", "query=bash", cwd=tmp_path, COMP_LINE=line, COMP_POINT=str(len(line)))
    assert result.returncode == 0, result.stderr[-2000:]
    options = result.stdout.split()
    assert "cache=dbcache" in options and "cache=none" in options
    assert not [o for o in options if "schema_" in o]
    assert not imported(result.stderr) & set(HEAVY)


@pytest.mark.parametrize("line,expected", [
    ("python -m dit_engine cache=dbcache cache.thr", "cache.threshold="),
    ("python -m dit_engine parallel=ulysses2 parallel.comm", "parallel.comm_dtype="),
    ("python -m dit_engine cache=scm calibrator=taylorseer calibrator.ord", "calibrator.order="),
])
def test_key_completion_reads_the_techniques_schema_without_torch(tmp_path, line, expected):
    """Completing a technique's key composes its schema: a torch-free module, so no torch import."""
    result = run_module("-sc", "query=bash", cwd=tmp_path, COMP_LINE=line, COMP_POINT=str(len(line)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout.split()
    assert not imported(result.stderr) & set(HEAVY)


BASH = shutil.which("bash")


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, "--norc", "--noprofile", "-c", script], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=600)


#: complete a line the way bash does: COMP_LINE / COMP_POINT set, the registered function called
COMPLETE = r"""
complete_line() {
    COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
    local function_name=$(complete -p "${COMP_LINE%% *}" | sed -E 's/.* -F ([^ ]+) .*/\1/')
    "$function_name"
    echo "${COMPREPLY[*]}"
}
"""


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize("command", ["python -m dit_engine", "dit-engine"])
def test_bash_completion_completes_cache_options(tmp_path, command):
    if command == "dit-engine" and not (BIN / "dit-engine").exists():
        pytest.skip("the dit-engine console script is not installed next to this python (pip install -e .)")
    script = f"""
set -e
eval "$({command} -sc install=bash)"
complete -p python
complete -p dit-engine
{COMPLETE}
COMP_WORDBREAKS=$' \\t\\n"\\'><;|&(:'   # Hydra's own script removes '=' from the word breaks
echo "full: $(complete_line "{command} cache=db")"
COMP_WORDBREAKS=$' \\t\\n"\\'><=;|&(:'  # bash's default: the word to replace starts after '='
echo "after=: $(complete_line "{command} cache=db")"
echo "groups: $(complete_line "{command} -m calib")"
echo "other: $(complete_line "python other.py cache=db")"
eval "$({command} -sc uninstall=bash)"
complete -p python 2>/dev/null || echo "python: no completion"
"""
    result = bash(script, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    out = result.stdout
    assert "complete -o default -F _dit_engine_complete python" in out
    assert "complete -o default -F _dit_engine_complete dit-engine" in out
    assert "cache=dbcache" in lines["full"].split() and "cache=dbcache_fast" in lines["full"].split()
    assert "dbcache" in lines["after="].split() and not [w for w in lines["after="].split() if "schema" in w]
    assert "calibrator=" in lines["groups"].split() and "cache=" not in lines["groups"].split()
    assert lines["other"].strip() == ""  # not a dit_engine command: left to bash's file names
    assert "python: no completion" in out


@pytest.mark.parametrize("line,expected", [
    ("python -m dit_engine cache=db", "dit-engine cache=db"),
    ("/opt/venv/bin/python3.11 -m dit_engine -m cache=none,", "dit-engine -m cache=none,"),
    ("~/.local/bin/dit-engine model=fl", "dit-engine model=fl"),
    ("python -m dit_engine ", "dit-engine "),
    ("python other.py x=1", "python other.py x=1"),  # not ours: left as it is
])
def test_a_query_line_is_spelled_as_hydra_expects(line, expected):
    from dit_engine.completion import normalise_line

    assert normalise_line(line) == expected
    assert normalise_line(line + "tail", point=len(line)) == expected  # only what is left of the cursor
