"""Shared fixtures. Tests run offline on CPU; tiny pipelines are built from small configs."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models are dominated by per-op overhead: one thread is faster and steadier than two.
torch.set_num_threads(1)


def psnr(reference: torch.Tensor, other: torch.Tensor) -> float:
    """PSNR in dB of two image batches in [0, 1]."""
    mse = torch.mean((reference.float() - other.float()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


@pytest.fixture(scope="session")
def tiny_flux():
    """A tiny FLUX pipeline with deterministic random weights, shared by the session."""
    from dit_engine.testing import build_tiny_flux_pipeline

    return build_tiny_flux_pipeline(seed=0)


@pytest.fixture(scope="session")
def tiny_pipe():
    """The embedded default model (trained weights shipped in the package)."""
    from dit_engine.digits import load_digits_pipeline

    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare(cfg):
    """A planned session for a composed config (what the CLI does before it runs anything)."""
    from dit_engine.session import Session

    return Session(cfg).prepare()


#: cache-dit is an optional peer: tests of cache=cachedit_dbcache skip without it (CI installs it).
HAS_CACHEDIT = importlib.util.find_spec("cache_dit") is not None
NEEDS_CACHEDIT = "cache-dit is not installed: pip install --no-deps cache-dit==1.5.3 to test cache=cachedit_dbcache (CI does)"


def missing_peer(*options: str) -> bool:
    """Whether an option among ``options`` needs a peer library that is not installed."""
    return not HAS_CACHEDIT and any("cachedit" in option for option in options)


def with_peer_marks(values: list) -> list:
    """Parametrize values, those that need a missing peer marked to skip with how to enable them."""
    params = []
    for value in values:
        parts = value if isinstance(value, tuple) else (value,)
        params.append(pytest.param(*parts, marks=pytest.mark.skipif(missing_peer(*map(str, parts)), reason=NEEDS_CACHEDIT)))
    return params
