"""An example dit_engine plugin: ``cache=every_nth`` and ``model=example_dit``.

It shows everything a third-party package needs: a cache technique in one module
(:mod:`dit_engine_example.every_nth`), an adapter for a model family
(:mod:`dit_engine_example.dit_adapter`), their YAML options under ``conf/``, three entry points in
``pyproject.toml``, and tests that run dit_engine's conformance suites (``tests/``).
"""
