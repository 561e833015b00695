"""HTTP serving: ``python -m dit_engine.serve [overrides]`` serves the planned pipeline over an
OpenAI-compatible images API (:mod:`dit_engine.serve.app`, :mod:`dit_engine.serve.engine`)."""
