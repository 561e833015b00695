"""``offload=``: keep weights in CPU memory and bring them to the GPU when they run, through
diffusers' own strategies (the library made for it):

* ``model``: whole components move to the GPU in turn (``enable_model_cpu_offload``);
* ``sequential``: every submodule moves when it runs (``enable_sequential_cpu_offload``): the
  least GPU memory, the slowest;
* ``group``: groups of ``offload.num_blocks_per_group`` blocks move together
  (``enable_group_offload``), overlapped with compute on CUDA streams (``offload.use_stream``).

The stage places the modules itself, so the session does not move the pipeline to the device.
On a machine or run without a GPU there is nothing to offload to: ``offload=`` is refused at plan
time there (a plain CPU run already keeps every weight in CPU memory). With ``parallel=`` it is
refused too: every rank must hold its weights on its own GPU for the collectives. Offloading is
not undone by ``remove()`` (reload the pipeline).
"""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.adapter import ModelInfo
from dit_engine.config.groups import Stage
from dit_engine.transforms.base import ApplyContext, Lifecycle, PlanContext, Transform
from dit_engine.offload.config import OffloadConfig, OffloadMode  # noqa: F401 - the schema, torch-free (re-exported)


class OffloadTransform(Transform):
    """Installs diffusers' offload hooks on the whole pipeline (on a GPU run)."""

    name = "offload.diffusers_offload"
    stage = Stage.OFFLOAD
    config_class = OffloadConfig
    lifecycle = Lifecycle(reversible=False, places_pipeline=True)

    @classmethod
    def check(cls, config: OffloadConfig, context: PlanContext) -> list[str]:
        problems = []
        if config.num_blocks_per_group < 1:
            problems.append(f"offload.num_blocks_per_group={config.num_blocks_per_group} must be 1 or more")
        device = context.device
        if device is not None and device.type != "cuda":
            problems.append(f"offload= moves weights between CPU memory and a GPU, and this run has no GPU (model.device={device}); "
                            "a CPU run already keeps every weight in CPU memory: drop offload=")
        return problems

    @classmethod
    def describe(cls, config: OffloadConfig, model_info: ModelInfo) -> str:
        detail = f", {config.num_blocks_per_group} block(s) per group, streams {config.use_stream}" if config.mode == "group" else ""
        return f"diffusers {config.mode} CPU offload{detail}; places the modules; irreversible"

    def apply(self, pipe: Any, context: ApplyContext) -> None:
        device = next(iter(context.transformers.values())).device
        if device.type != "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        if self.config.mode == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif self.config.mode == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                                      num_blocks_per_group=self.config.num_blocks_per_group, use_stream=self.config.use_stream)

    def remove(self, pipe: Any) -> None:
        pass  # irreversible: Handle.remove() refuses before it gets here
