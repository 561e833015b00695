"""Transforms, one module per stage. They are registered through entry points (pyproject.toml)."""
