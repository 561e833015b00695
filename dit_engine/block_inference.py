"""Infer a transformer's block lists and their call patterns from one traced pipeline call.

The automatic adapter (``model=auto``, and ``apply()`` on a pipeline no adapter claims) runs the
pipeline once with hooks on every block of every top-level block ``ModuleList`` of each
transformer, and reads off the first transformer call:

* which lists run, in which order, and whether each runs as one contiguous chain (a list whose
  blocks are interleaved with another list's, such as ConsisID's face perceivers, is left alone);
* how the parent calls a block: which argument is the image stream (``hidden``), which the text
  stream (``encoder``), by keyword or position, and what it returns (one tensor, or two streams in
  which order). Streams are matched by shape between the block's inputs and outputs; a list
  whose blocks do not pass their stream on to the next block (WanVACE's hint blocks) is left
  alone;
* the timestep embedding a TeaCache probe can watch (an argument named like ``temb``).

Nothing here is specific to a family: what cannot be inferred is reported, never guessed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from dit_engine.adapter import BlockInput, BlockPattern, BlockSpec

#: Argument names of the image stream, in order of preference, when shapes alone do not decide.
HIDDEN_NAMES = ("hidden_states", "x", "visual_embed", "img", "image")
#: Argument names of a timestep embedding (TeaCache's probe), in order of preference.
TIMESTEP_NAMES = ("temb", "emb", "time_embed", "timestep", "adaln_input", "vec", "t_emb", "temb_mod_img", "temb_mod")


@dataclass
class ListInference:
    """What the trace found about one block list.

    Attributes:
        path: attribute path in the transformer (``transformer_blocks``).
        length: number of blocks.
        pattern: the inferred call pattern, or None when the list is left alone.
        reason: why the list is left alone (None when it is used).
    """

    path: str
    length: int
    pattern: BlockPattern | None = None
    reason: str | None = None

    def describe(self) -> str:
        if self.pattern is None:
            return f"{self.path}[{self.length}] left alone: {self.reason}"
        p = self.pattern
        hidden = f"{p.hidden}@{p.hidden_position}"
        encoder = f", encoder {p.encoder}@{p.encoder_position}" if p.encoder else ""
        return f"{self.path}[{self.length}] {p.name}: hidden {hidden}{encoder}, returns ({', '.join(p.returns)})"


@dataclass
class TransformerInference:
    """The inference for one transformer of the pipeline."""

    attr: str
    class_name: str
    lists: list[ListInference] = field(default_factory=list)
    probe: BlockInput | None = None
    calls_per_step: float | None = None

    @property
    def specs(self) -> tuple[BlockSpec, ...]:
        return tuple(BlockSpec(item.path, item.pattern) for item in self.lists if item.pattern is not None)

    def problems(self) -> list[str]:
        if self.specs:
            return []
        if not self.lists:
            return [f"{self.attr} ({self.class_name}) has no top-level ModuleList of attention blocks"]
        return [f"{self.attr} ({self.class_name}): {item.describe()}" for item in self.lists]


def _has_attention(module: torch.nn.Module) -> bool:
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention

    return any(isinstance(m, (Attention, AttentionModuleMixin)) for m in module.modules())


def candidate_lists(transformer: torch.nn.Module) -> dict[str, torch.nn.ModuleList]:
    """The transformer's top-level ``ModuleList``s whose every element holds an attention module."""
    return {
        name: child for name, child in transformer.named_children()
        if isinstance(child, torch.nn.ModuleList) and len(child) > 0 and all(_has_attention(block) for block in child)
    }


def transformer_attrs(pipe: Any) -> list[str]:
    """The pipeline components that are DiTs: ``transformer``, ``transformer_2``... (diffusers' naming)."""
    components = getattr(pipe, "components", {}) or {}
    return sorted(name for name, module in components.items()
                  if name.startswith("transformer") and isinstance(module, torch.nn.Module))


@dataclass
class _Call:
    args: tuple
    kwargs: dict
    output: Any = None


class _Recorder:
    """Hooks on every candidate block: the order of block calls within the transformer's first
    call, and the first call of the first two blocks of each list (inputs and output)."""

    def __init__(self, transformer: torch.nn.Module, lists: dict[str, torch.nn.ModuleList]):
        self.events: list[tuple[str, int]] = []
        self.calls: dict[tuple[str, int], _Call] = {}
        self.transformer_calls = 0
        self.recording = False
        self.handles = [
            transformer.register_forward_pre_hook(self._transformer_enter),
            transformer.register_forward_hook(self._transformer_exit),
        ]
        for path, blocks in lists.items():
            for index, block in enumerate(blocks):
                self.handles.append(block.register_forward_pre_hook(self._enter(path, index), with_kwargs=True))
                if index < 2:
                    self.handles.append(block.register_forward_hook(self._exit(path, index)))

    def _transformer_enter(self, module, args):
        self.transformer_calls += 1
        self.recording = self.transformer_calls == 1

    def _transformer_exit(self, module, args, output):
        self.recording = False

    def _enter(self, path: str, index: int):
        def hook(module, args, kwargs):
            if self.recording:
                self.events.append((path, index))
                if index < 2 and (path, index) not in self.calls:
                    self.calls[(path, index)] = _Call(args, dict(kwargs))
        return hook

    def _exit(self, path: str, index: int):
        def hook(module, args, output):
            call = self.calls.get((path, index))
            if self.recording and call is not None and call.output is None:
                call.output = output
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _parameter_names(block: torch.nn.Module) -> list[str]:
    try:
        return [name for name in inspect.signature(block.forward).parameters if name != "self"]
    except (TypeError, ValueError):
        return []


def _tensor_inputs(call: _Call, names: list[str]) -> list[tuple[str, int, torch.Tensor]]:
    """``(name, position, tensor)`` of every tensor argument; position is the signature position."""
    found = []
    for position, value in enumerate(call.args):
        if isinstance(value, torch.Tensor):
            found.append((names[position] if position < len(names) else f"arg{position}", position, value))
    for name, value in call.kwargs.items():
        if isinstance(value, torch.Tensor):
            found.append((name, names.index(name) if name in names else len(names), value))
    return found


def _pick_hidden(candidates: list[tuple[str, int, torch.Tensor]]):
    """Among inputs of the right shape, the image stream: a known name first, else the lowest position."""
    for preferred in HIDDEN_NAMES:
        for candidate in candidates:
            if candidate[0] == preferred:
                return candidate
    return min(candidates, key=lambda c: c[1]) if candidates else None


def infer_pattern(path: str, block: torch.nn.Module, call: _Call) -> tuple[BlockPattern | None, str | None]:
    """The call pattern of one block from its first recorded call, or ``(None, reason)``."""
    names = _parameter_names(block)
    inputs = _tensor_inputs(call, names)
    output = call.output
    if isinstance(output, torch.Tensor):
        same = [c for c in inputs if c[2].shape == output.shape]
        hidden = _pick_hidden(same)
        if hidden is None:
            return None, f"returns a {tuple(output.shape)} tensor that matches no input's shape"
        return BlockPattern(name=f"single({hidden[0]})", hidden=hidden[0], hidden_position=hidden[1],
                            encoder=None, returns=("hidden",)), None
    if isinstance(output, (tuple, list)) and len(output) == 2:
        shapes = [o.shape if isinstance(o, torch.Tensor) else None for o in output]
        if None in shapes:
            return None, "returns None for one stream in its first block"
        if shapes[0] == shapes[1]:
            return None, ("returns two streams of one shape, so their order cannot be read off; trace with a text "
                          "length that differs from the image length")
        matched = []
        for shape in shapes:
            candidates = [c for c in inputs if c[2].shape == shape]
            if not candidates:
                return None, f"returns a {tuple(shape)} stream that matches no input's shape"
            matched.append(_pick_hidden(candidates))
        hidden_index = next((i for i, m in enumerate(matched) if m[0] in HIDDEN_NAMES), None)
        if hidden_index is None:
            hidden_index = 0 if matched[0][1] <= matched[1][1] else 1
        hidden, encoder = matched[hidden_index], matched[1 - hidden_index]
        returns = ("hidden", "encoder") if hidden_index == 0 else ("encoder", "hidden")
        return BlockPattern(name=f"dual({','.join(returns)})", hidden=hidden[0], hidden_position=hidden[1],
                            encoder=encoder[0], encoder_position=encoder[1], returns=returns), None
    kind = type(output).__name__ if not isinstance(output, (tuple, list)) else f"{len(output)} values"
    return None, f"returns {kind}, not one tensor or two streams"


def _chains(pattern: BlockPattern, first: _Call, second: _Call | None) -> bool:
    """Whether block 0's output stream is what block 1 receives (a chain the cache may skip)."""
    if second is None:
        return True
    out_hidden, _ = pattern.read_outputs(first.output)
    try:
        next_hidden, _ = pattern.read_inputs(second.args, second.kwargs)
    except (IndexError, KeyError):
        return False
    return isinstance(next_hidden, torch.Tensor) and next_hidden.shape == out_hidden.shape and torch.equal(next_hidden, out_hidden)


def _contiguous(events: list[tuple[str, int]], path: str, length: int) -> bool:
    positions = [i for i, (p, _) in enumerate(events) if p == path]
    indices = [events[i][1] for i in positions]
    return indices == list(range(length)) and positions == list(range(positions[0], positions[0] + length))


def _probe(block: torch.nn.Module, call: _Call) -> BlockInput | None:
    names = _parameter_names(block)
    for wanted in TIMESTEP_NAMES:
        if wanted in call.kwargs and call.kwargs[wanted] is not None:
            return BlockInput(wanted)
        if wanted in names:
            position = names.index(wanted)
            if position < len(call.args) and call.args[position] is not None:
                return BlockInput(wanted, position)
    return None


def infer(pipe: Any, call_kwargs: dict[str, Any]) -> list[TransformerInference]:
    """Run ``pipe(**call_kwargs)`` once with recording hooks and infer every transformer's lists.

    The hooks are removed before this returns, whatever happens; the call's output is dropped.
    """
    attrs = transformer_attrs(pipe)
    recorders = {}
    for attr in attrs:
        transformer = getattr(pipe, attr)
        recorders[attr] = (transformer, candidate_lists(transformer))
    active = {attr: _Recorder(t, lists) for attr, (t, lists) in recorders.items()}
    try:
        pipe(**call_kwargs)
    finally:
        for recorder in active.values():
            recorder.remove()

    steps = call_kwargs.get("num_inference_steps")
    results = []
    for attr, (transformer, lists) in recorders.items():
        recorder = active[attr]
        result = TransformerInference(attr, type(transformer).__name__)
        if steps and recorder.transformer_calls:
            result.calls_per_step = recorder.transformer_calls / steps
        order = list(dict.fromkeys(path for path, _ in recorder.events))
        for path in order + [p for p in lists if p not in order]:
            item = ListInference(path, len(lists[path]))
            result.lists.append(item)
            if path not in order:
                item.reason = "not called in the traced call" if recorder.transformer_calls else "the transformer did not run in the traced call"
                continue
            if not _contiguous(recorder.events, path, item.length):
                item.reason = "its blocks run interleaved with another list's or out of order"
                continue
            first = recorder.calls.get((path, 0))
            if first is None or first.output is None:
                item.reason = "its first block's output was not seen"
                continue
            pattern, reason = infer_pattern(path, lists[path][0], first)
            if pattern is not None and not _chains(pattern, first, recorder.calls.get((path, 1))):
                pattern, reason = None, "its blocks do not pass their stream on to the next block"
            item.pattern, item.reason = pattern, reason
        used = [item for item in result.lists if item.pattern is not None]
        if used:
            result.probe = _probe(lists[used[0].path][0], recorder.calls[(used[0].path, 0)])
        results.append(result)
    return results
