"""The collectives context parallelism needs, written for any split (uneven sequences and heads)
and for every backend (gloo on CPU has no uneven ``all_gather``; uneven ``all_to_all_single`` on
flat tensors works on gloo and NCCL alike).

Every call goes through :class:`CollectiveStats`, so a run reports the time spent communicating
and the bytes each rank sent to the others (what docs/parallel.md's volume model predicts).

``parallel.comm_dtype=fp8`` sends all-to-all payloads as float8 (e4m3) with one float32 scale
per tensor and destination (:func:`fp8_encode`): the bytes travel as ``uint8``, which every
backend carries, so no backend needs float8 support of its own.
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
    def measure(self, device: torch.device, bytes_sent: int = 0, count: bool = True):
        """Time the block as communication; ``count=False``: the wait of a collective already counted."""
        self.calls += int(count)
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


#: the float8 format of ``parallel.comm_dtype=fp8`` (None: this torch has no float8)
FP8 = getattr(torch, "float8_e4m3fn", None)
#: bytes of the float32 scale sent after every float8 tensor
SCALE_BYTES = 4


def fp8_encode(x: torch.Tensor) -> torch.Tensor:
    """``x`` as flat ``uint8``: its values in float8 scaled to the format's range, then the float32
    scale (4 bytes). One scale per tensor: the payload's largest magnitude maps to float8's."""
    amax = x.detach().abs().amax().float() if x.numel() else torch.zeros((), device=x.device)
    scale = (amax / torch.finfo(FP8).max).clamp(min=torch.finfo(torch.float32).tiny).reshape(1)
    payload = (x.float() / scale).to(FP8).contiguous().view(torch.uint8).reshape(-1)
    return torch.cat([payload, scale.view(torch.uint8)])


def fp8_decode(flat: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`fp8_encode`: the flat values in ``dtype``."""
    payload, scale = flat[:-SCALE_BYTES], flat[-SCALE_BYTES:].clone().view(torch.float32)
    return (payload.view(FP8).float() * scale).to(dtype)


class PendingExchange:
    """An all-to-all in flight (:meth:`SequenceGroup.exchange`): :meth:`wait` returns, per source
    rank, the flat tensors it sent this rank (decoded from float8 when sent so)."""

    def __init__(self, work, receive: torch.Tensor, sizes: list[list[int]], dtype: torch.dtype, fp8: bool,
                 stats: CollectiveStats):
        self.work, self.receive, self.sizes, self.dtype, self.fp8, self.stats = work, receive, sizes, dtype, fp8, stats

    def wait(self) -> list[list[torch.Tensor]]:
        with self.stats.measure(self.receive.device, count=False):
            self.work.wait()
        flat = self.receive.split([sum(per) for per in self.sizes])
        received = [list(part.split(per)) for part, per in zip(flat, self.sizes)]
        if self.fp8:
            received = [[fp8_decode(t, self.dtype) for t in per] for per in received]
        return received


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
        received = self.exchange([[p] for p in pieces], [[n] for n in receive_numels]).wait()
        return [per[0] for per in received]

    def exchange(self, pieces: list[list[torch.Tensor]], receive_numels: list[list[int]], fp8: bool = False) -> PendingExchange:
        """Start one all-to-all: the tensors ``pieces[j]`` go to rank j, ``receive_numels[j]`` are the
        sizes of the tensors rank j sends here. ``fp8``: each tensor travels as float8 with its scale.
        Returns at once; :meth:`PendingExchange.wait` gives what arrived (communication can overlap
        the computation issued in between)."""
        dtype = pieces[0][0].dtype
        if fp8:
            flats = [[fp8_encode(t) for t in per] for per in pieces]
            receive_sizes = [[n + SCALE_BYTES for n in per] for per in receive_numels]
        else:
            flats = [[t.reshape(-1) for t in per] for per in pieces]
            receive_sizes = [list(per) for per in receive_numels]
        send = torch.cat([t for per in flats for t in per])
        send_sizes = [sum(t.numel() for t in per) for per in flats]
        receive = send.new_empty(sum(map(sum, receive_sizes)))
        leaving = (send.numel() - send_sizes[self.rank]) * send.element_size()  # my own piece stays here
        with self.stats.measure(send.device, leaving):
            work = dist.all_to_all_single(receive, send, [sum(per) for per in receive_sizes], send_sizes,
                                          group=self.group, async_op=True)
        return PendingExchange(work, receive, receive_sizes, dtype, fp8, self.stats)

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
