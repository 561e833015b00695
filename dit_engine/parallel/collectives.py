"""The collectives context parallelism needs, written for any split (uneven sequences and heads)
and for every backend (gloo on CPU has no uneven ``all_gather``; uneven ``all_to_all_single`` on
flat tensors works on gloo and NCCL alike).

Every call goes through :class:`CollectiveStats`, so a run reports the time spent communicating
and the bytes each rank sent to the others (what docs/parallel.md's volume model predicts).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


def split_sizes(total: int, parts: int) -> list[int]:
    """Sizes of ``torch.tensor_split(total, parts)``: the first ``total % parts`` parts get one more."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class CollectiveStats:
    """Calls, seconds and bytes sent to other ranks in collectives. On CUDA the time is read from
    events at :meth:`seconds` (host time would only measure the enqueue)."""

    calls: int = 0
    bytes_sent: int = 0
    _host_seconds: float = 0.0
    _events: list = field(default_factory=list)

    @contextmanager
    def measure(self, device: torch.device, bytes_sent: int = 0):
        self.calls += 1
        self.bytes_sent += bytes_sent
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
        else:
            began = time.perf_counter()
            yield
            self._host_seconds += time.perf_counter() - began

    def seconds(self) -> float:
        if self._events:
            torch.cuda.synchronize()
            self._host_seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events.clear()
        return self._host_seconds

    def reset(self) -> None:
        self.seconds()
        self.calls = 0
        self.bytes_sent = 0
        self._host_seconds = 0.0


class SequenceGroup:
    """One process group that a sequence (or the heads of it) is spread over, with its rank,
    size and a per-call memo of every rank's local length."""

    def __init__(self, group: dist.ProcessGroup | None, stats: CollectiveStats):
        self.group = group
        self.size = dist.get_world_size(group) if group is not None else 1
        self.rank = dist.get_rank(group) if group is not None else 0
        self.stats = stats
        self._lengths: dict[int, list[int]] = {}

    def forget_lengths(self) -> None:
        """Start a new transformer call: local lengths may change between calls."""
        self._lengths.clear()

    def lengths(self, local: int, device: torch.device) -> list[int]:
        """Every rank's length of a sequence this rank holds ``local`` elements of."""
        if self.size == 1:
            return [local]
        known = self._lengths.get(local)
        if known is None:
            mine = torch.tensor([local], dtype=torch.int64, device=device)
            everyone = [torch.empty_like(mine) for _ in range(self.size)]
            with self.stats.measure(device, mine.numel() * mine.element_size() * (self.size - 1)):
                dist.all_gather(everyone, mine, group=self.group)
            known = self._lengths[local] = [int(t.item()) for t in everyone]
        return known

    def all_to_all(self, pieces: list[torch.Tensor], receive_numels: list[int]) -> list[torch.Tensor]:
        """Send ``pieces[j]`` to rank j; return the flat piece received from each rank."""
        send = torch.cat([p.reshape(-1) for p in pieces])
        receive = send.new_empty(sum(receive_numels))
        leaving = (send.numel() - pieces[self.rank].numel()) * send.element_size()  # my own piece stays here
        with self.stats.measure(send.device, leaving):
            dist.all_to_all_single(receive, send, receive_numels, [p.numel() for p in pieces], group=self.group)
        return list(receive.split(receive_numels))

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Concatenate every rank's ``x`` along ``dim`` (lengths may differ between ranks)."""
        if self.size == 1:
            return x
        lengths = self.lengths(x.shape[dim], x.device)
        longest = max(lengths)
        padded = x
        if x.shape[dim] < longest:
            pad_shape = list(x.shape)
            pad_shape[dim] = longest - x.shape[dim]
            padded = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
        padded = padded.contiguous()
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        with self.stats.measure(x.device, padded.numel() * padded.element_size() * (self.size - 1)):
            dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, lengths)], dim=dim)

    def shard(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's part of a tensor every rank holds whole (no communication)."""
        return x.tensor_split(self.size, dim=dim)[self.rank] if self.size > 1 else x
