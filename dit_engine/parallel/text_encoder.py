"""``parallel.text_encoder=true``: the prompts of a text-encoder call split over the ranks.

Every rank of a parallel plan runs the pipeline with the same prompts, so every rank would encode
all of them. Instead, each rank encodes its share of the batch (``tensor_split`` of the rows:
T5, UMT5, CLIP, Qwen2.5-VL alike, since every prompt is encoded on its own) and the ranks gather
the outputs, so each ends with the whole batch's embeddings, as one process computes them.

A batch of one prompt (or one with image inputs, as Qwen-Image-Edit's encoder takes, whose rows
are not the prompts') is encoded whole on every rank: there is nothing to split. Output fields
that are not per-prompt tensors (a key/value cache) are dropped: pipelines read the hidden states.
"""

from __future__ import annotations

from typing import Any

import torch

from dit_engine.parallel.collectives import SequenceGroup

#: keyword arguments whose rows are not prompts: such calls run whole
NOT_SPLIT = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw")


class TextEncoderParallel:
    """Splits every call of ``encoder`` over ``group`` by prompts; :meth:`remove` undoes it."""

    def __init__(self, encoder: torch.nn.Module, group: SequenceGroup):
        self.encoder = encoder
        self.group = group
        self.calls_split = 0
        self._rows: int | None = None  # this call's rows here (0: a placeholder row ran)
        self._handles = [
            encoder.register_forward_pre_hook(self._take_my_rows, with_kwargs=True),
            encoder.register_forward_hook(self._gather_rows, with_kwargs=True),
        ]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _batch(self, args: tuple, kwargs: dict) -> int | None:
        """The prompts in this call (None: not a call to split)."""
        if any(kwargs.get(name) is not None for name in NOT_SPLIT):
            return None
        first = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        if not isinstance(first, torch.Tensor) or first.dim() < 2 or first.shape[0] < 2:
            return None
        return int(first.shape[0])

    def _take_my_rows(self, _module, args: tuple, kwargs: dict):
        batch = self._batch(args, kwargs)
        self._rows = None
        if batch is None or self.group.size == 1:
            return None
        self.group.forget_lengths()
        mine = torch.arange(batch).tensor_split(self.group.size)[self.group.rank]
        # a rank with no prompt of its own encodes the first one (the output shapes then agree)
        # and contributes no rows
        self._rows = len(mine)
        rows = mine if len(mine) else torch.arange(1)

        def take(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch:
                return value[rows.to(value.device)]
            return value

        self.calls_split += 1
        return tuple(take(a) for a in args), {k: take(v) for k, v in kwargs.items()}

    def _gather_rows(self, _module, _args, _kwargs, output: Any) -> Any:
        if self._rows is None:
            return None
        rows, self._rows = self._rows, None
        local = max(rows, 1)

        def gather(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == local:
                return self.group.gather(value[:rows].contiguous(), dim=0)
            if isinstance(value, tuple):
                return tuple(gather(v) for v in value)
            return None  # not per prompt (a key/value cache): dropped, see the module docstring

        if isinstance(output, dict):  # transformers' ModelOutput (an OrderedDict)
            for key in list(output.keys()):
                output[key] = gather(output[key])
            return output
        return gather(output)


def text_encoders(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's text encoders by attribute name (``text_encoder``, ``text_encoder_2`` ...)."""
    components = getattr(pipe, "components", {}) or {}
    return {name: module for name, module in sorted(components.items())
            if name.startswith("text_encoder") and isinstance(module, torch.nn.Module)}
