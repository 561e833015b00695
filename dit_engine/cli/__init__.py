"""``python -m dit_engine [overrides]`` and ``dit-engine``: Hydra composes, a
:class:`~dit_engine.session.Session` plans and runs.

One module per job: :mod:`~dit_engine.cli.entry` (arguments, exit codes, one-line errors),
:mod:`~dit_engine.cli.signals` (Ctrl-C and SIGTERM), :mod:`~dit_engine.cli.plan_check` (every cell
planned before anything runs), :mod:`~dit_engine.cli.sweep` (a sweep's cells),
:mod:`~dit_engine.cli.job` (one run, every failure one line), :mod:`~dit_engine.cli.run_dir` (the
run's output directory), :mod:`~dit_engine.cli.logs` (what the console shows) and
:mod:`~dit_engine.cli.torchrun` (joining a torchrun launch).

``--help`` and shell completion import neither torch nor diffusers: the session, the plan and the
launcher are imported only inside a run (tests/test_cli_startup.py checks it).
"""

from dit_engine.cli.entry import main

__all__ = ["main"]
