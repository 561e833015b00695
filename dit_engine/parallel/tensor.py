"""Tensor parallelism: the adapter's ``_tp_plan`` (module glob -> ``colwise`` / ``rowwise``, the
format diffusers ships for Flux, Flux2 and Qwen-Image) applied with torch's ``parallelize_module``.

diffusers' ``apply_tensor_parallel`` refuses CPU meshes; the sharding styles themselves work on
any device, so the same plan is applied here on the same building blocks (diffusers' plan
grouping and its packed-projection styles), which lets the CPU tests run it on gloo ranks.
Sharding replaces weights by their shards: it cannot be removed (reload the pipeline).
"""

from __future__ import annotations

import torch

from dit_engine.errors import DitEngineError


def shard_linear_layers(transformer: torch.nn.Module, plan: dict[str, str], tp_mesh) -> None:
    """Shard ``transformer``'s linear layers in place over ``tp_mesh`` following ``plan``."""
    try:
        from diffusers.hooks.tensor_parallel import _resolve_tp_plan, _styles, resolve_tp_shard_specs
    except ImportError as err:  # the helpers moved: say which diffusers this needs
        raise DitEngineError(f"tensor parallelism needs diffusers 0.42's tensor-parallel helpers ({err}); "
                             "install diffusers==0.42.1 or use context parallelism (parallel=ulysses2)") from None
    from torch.distributed.tensor.parallel import parallelize_module

    resolve_tp_shard_specs(transformer, plan, tp_mesh.size())  # checks every split is even first
    for submodule, relative_plan in _resolve_tp_plan(transformer, plan):
        parallelize_module(submodule, tp_mesh, _styles(relative_plan))
