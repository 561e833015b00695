"""Where the sequence is split and gathered: a context-parallel plan applied with torch hooks.

A plan is diffusers' data format (``ContextParallelInput`` / ``ContextParallelOutput``, the
``_cp_plan`` that diffusers ships on Flux, Wan, Qwen-Image and others): module path (``*``
matches every child of a ModuleList; ``""`` is the transformer) to either

* ``{argument name or output index: ContextParallelInput(split_dim, expected_dims, split_output)}``:
  split those inputs (or, with ``split_output``, those outputs, e.g. RoPE tables) into this rank's
  chunk, or
* ``ContextParallelOutput(gather_dim, expected_dims)`` (or a list, one per output): gather the
  full sequence back from every rank.

Splits are ``tensor_split`` (any length works, chunks differ by at most one) and need no
communication. The hooks are torch's own forward (pre-)hooks, which run before and after any
diffusers hook on the module: a cache hook on the first block then sees the already split input
(cache-dit's sharded-vs-unsharded residual crash cannot happen), and a model-level cache that
answers a whole call returns the gathered output of the last computed call.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from dit_engine.compat import context_parallel_classes
from dit_engine.errors import DitEngineError
from dit_engine.parallel.collectives import SequenceGroup


def modules_at(root: torch.nn.Module, path: str) -> list[torch.nn.Module]:
    """The modules a plan path names (``*`` expands over children); [] when none exists."""
    found = [root]
    for part in path.split(".") if path else []:
        following = []
        for module in found:
            if part == "*":
                following.extend(module.children())
            elif hasattr(module, part):
                following.append(getattr(module, part))
        found = following
    return found


def _signature_index(module: torch.nn.Module) -> dict[str, int]:
    names = list(inspect.signature(type(module).forward).parameters)[1:]
    return {name: i for i, name in enumerate(names)}


class SequenceSharding:
    """The hooks of one plan on one transformer; :meth:`remove` takes them all away."""

    def __init__(self, transformer: torch.nn.Module, plan: dict[str, Any], group: SequenceGroup):
        self.group = group
        self.handles = []
        self._input_class, self._output_class = context_parallel_classes()
        for path, entry in plan.items():
            modules = modules_at(transformer, path)
            if not modules:
                raise DitEngineError(f"the context-parallel plan names '{path}', which {type(transformer).__name__} does not have; "
                                     "fix the adapter's context_parallel_plan")
            for module in modules:
                self._install(module, entry)

    def _install(self, module: torch.nn.Module, entry: Any) -> None:
        if isinstance(entry, dict):
            inputs = {k: v for k, v in entry.items() if not v.split_output}
            outputs = {k: v for k, v in entry.items() if v.split_output}
            if inputs:
                index = _signature_index(module)
                self.handles.append(module.register_forward_pre_hook(self._split_inputs(inputs, index), with_kwargs=True))
            if outputs:
                self.handles.append(module.register_forward_hook(self._split_outputs(outputs)))
        else:
            gathers = [entry] if isinstance(entry, self._output_class) else list(entry)
            self.handles.append(module.register_forward_hook(self._gather_outputs(gathers)))

    def _split(self, x: Any, spec: Any) -> Any:
        # Like diffusers: a tensor of another rank than the plan expects is left whole (e.g. Wan's
        # per-token timestep entry when the timestep is one value per sample).
        if not isinstance(x, torch.Tensor) or (spec.expected_dims is not None and x.dim() != spec.expected_dims):
            return x
        return self.group.shard(x, spec.split_dim)

    def _split_inputs(self, specs: dict[str, Any], index: dict[str, int]):
        def hook(module, args, kwargs):
            args = list(args)
            for name, spec in specs.items():
                if name in kwargs:
                    kwargs[name] = self._split(kwargs[name], spec)
                elif index.get(name, len(args)) < len(args):
                    args[index[name]] = self._split(args[index[name]], spec)
            return tuple(args), kwargs
        return hook

    def _split_outputs(self, specs: dict[int, Any]):
        def hook(module, args, output):
            single = isinstance(output, torch.Tensor)
            items = [output] if single else list(output)
            for position, spec in specs.items():
                items[position] = self._split(items[position], spec)
            return items[0] if single else type(output)(items)
        return hook

    def _gather_outputs(self, specs: list[Any]):
        def hook(module, args, output):
            single = isinstance(output, torch.Tensor)
            items = [output] if single else list(output)
            for position, spec in enumerate(specs):
                if spec is None or position >= len(items):
                    continue
                x = items[position]
                if isinstance(x, torch.Tensor) and (spec.expected_dims is None or x.dim() == spec.expected_dims):
                    items[position] = self.group.gather(x, spec.gather_dim)
            return items[0] if single else type(output)(items)
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
