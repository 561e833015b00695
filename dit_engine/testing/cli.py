"""Run the CLI in this process (tests): the same code path as ``python -m dit_engine`` without
paying Python's and torch's start-up for every case."""

from __future__ import annotations

import contextlib
import io

from dit_engine.cli import main


def run_cli(*args: str) -> tuple[int, str]:
    """``python -m dit_engine *args`` in this process: (exit code, stderr)."""
    err, code = io.StringIO(), 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    return code, err.getvalue()


def refusal(*args: str) -> str:
    """Run the CLI on bad input (:func:`run_cli`); assert it refused as promised, exit 2 with one
    ``dit_engine: error: ...`` line and no traceback, and return that line."""
    code, stderr = run_cli(*args)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("dit_engine: error: "), stderr
    return lines[0]
