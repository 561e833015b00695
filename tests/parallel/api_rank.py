"""A user's script under torchrun: no process group set up by hand; dit_engine creates it from
torchrun's environment (and destroys it at exit, so the process exits cleanly)."""

import sys

import dit_engine
from dit_engine.testing import build_tiny_flux_pipeline, tiny_flux_call_kwargs

pipe = build_tiny_flux_pipeline()
pipe.set_progress_bar_config(disable=True)
handle = dit_engine.apply(pipe, "parallel=ring2", "cache=dbcache")
images = pipe(**tiny_flux_call_kwargs()).images
print(f"rank output {tuple(images.shape)} world {handle.summary()['transforms']['shard.torch_distributed']['world_size']}")
sys.exit(0)
