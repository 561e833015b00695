"""Benchmarks: accelerated vs plain diffusers on the same pipeline, side by side in one run."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
