"""``import dit_engine`` leaves other libraries' logging as it is: a library used through ``apply()``
must not change its host's logging. Only the command-line entry points quiet library noise
(:func:`dit_engine.console.quiet_known_noise`). Each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

#: Loggers whose settings dit_engine must leave alone ("" is the root logger); the last three are
#: the ones the entry points quiet.
LOGGERS = ("", "diffusers", "transformers", "torch", "hydra", "py.warnings",
           "torchao", "torch.utils._pytree", "transformers.utils.import_utils")

_SNAPSHOT = f"""
import json, logging

def snapshot():
    loggers = {{name: logging.getLogger(name) for name in {LOGGERS!r}}}
    return {{name: [lg.level, lg.disabled, lg.propagate, len(lg.filters), len(lg.handlers)]
             for name, lg in loggers.items()}}
"""


def _before_and_after(first: str, then: str) -> tuple[dict, dict]:
    """Logger settings after running ``first`` and again after ``then``, in a fresh interpreter."""
    script = f"{_SNAPSHOT}\n{first}\nbefore = snapshot()\n{then}\nprint(json.dumps([before, snapshot()]))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = json.loads(result.stdout.splitlines()[-1])
    return before, after


def test_import_dit_engine_leaves_logging_alone():
    before, after = _before_and_after("", "import dit_engine")
    assert after == before


def test_import_of_the_api_leaves_the_libraries_logging_alone():
    """With torch, diffusers, transformers and Hydra already imported (a host application), loading
    ``apply`` changes none of their loggers."""
    before, after = _before_and_after("import torch, diffusers, transformers, hydra",
                                      "import dit_engine\nfrom dit_engine import apply")
    assert after == before
