"""Ulysses, Ring and USP attention over a sequence sharded across ranks, for any sequence length
and head count.

Layout is SDPA's: ``(batch, heads, sequence, head_dim)``. Each rank holds a contiguous chunk of
the (possibly joint text + image) sequence; chunk lengths may differ by rank.

* **Ulysses** (all-to-all): each rank sends head group j of its chunk to rank j and receives its
  own head group for every rank's chunk, so it attends over the whole sequence with a subset of
  the heads; a second all-to-all returns the output to the sequence layout. Head groups follow
  ``tensor_split``, so a head count the degree does not divide works (some ranks get one more).
* **Ring**: queries stay put; key/value chunks travel around the ring (send to the next rank,
  receive from the previous one while computing) and the partial results merge exactly by their
  log-sum-exp (online softmax).
* **USP**: Ulysses inside groups of ``ulysses_degree`` ranks, Ring across those groups.

:class:`ContextParallelAttention` swaps these in for ``F.scaled_dot_product_attention`` inside the
attention modules the adapter names (a torch function mode entered around each module's forward):
the model's own attention processor keeps doing projections, norms and RoPE on the local chunk.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dit_engine.errors import DitEngineError
from dit_engine.parallel.collectives import SequenceGroup, split_sizes


def key_padding_mask(mask: torch.Tensor | None, batch: int, keys: int, dtype: torch.dtype) -> torch.Tensor | None:
    """An SDPA ``attn_mask`` as an additive ``(batch, keys)`` key mask; None when absent.

    Only masks that are the same for every query and head (padding masks, as Qwen-Image builds)
    can follow their keys across ranks; anything else is refused rather than silently dropped.
    """
    if mask is None:
        return None
    if mask.dim() == 2:
        mask = mask[:, None, None, :] if mask.shape == (batch, keys) else mask[None, None]
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    # a padding mask expanded over heads or queries (LTX-Video's is (B, heads, 1, keys)) is one mask
    for dim in (1, 2):
        if mask.shape[dim] != 1 and bool((mask == mask.narrow(dim, 0, 1)).all()):
            mask = mask.narrow(dim, 0, 1)
    if mask.shape[-1] != keys or mask.shape[1] != 1 or mask.shape[2] != 1:
        raise DitEngineError(
            f"context parallelism supports key padding masks only, got an attention mask of shape {tuple(mask.shape)}; "
            "use parallel=none for this model (or tensor parallelism, parallel.tp_degree)"
        )
    mask = mask[:, 0, 0, :].expand(batch, keys)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def attention_with_lse(q, k, v, key_mask, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output and its log-sum-exp per query, ``(B, H, Sq, D)`` and float32 ``(B, H, Sq)``."""
    mask = key_mask[:, None, None, :] if key_mask is not None else None
    if q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask, scale=scale)[:2]
        return out, lse.float()
    if q.device.type == "cuda" and mask is None and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[:2]
        return out, lse.float()
    # Any other device or case: the exact math in float32.
    scores = (q.float() @ k.float().transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask.float()
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.exp(scores - lse[..., None]) @ v.float()
    return out.to(q.dtype), lse


def ulysses_attention(q, k, v, key_mask, scale, group: SequenceGroup, attend, fp8: bool = False,
                      head_groups: int = 1) -> torch.Tensor:
    """Ulysses over ``group``: ``(B, H, S_local, D)`` q/k/v in, the attention output in the same layout.

    Rank j receives head group j (``split_sizes(H, U)``) of every rank's chunk, so it attends over
    the group's whole sequence with its heads (``attend(q, k, v, key_mask)``), and a second
    all-to-all returns the output to the sequence layout. q, k and v travel in one all-to-all.

    ``head_groups > 1`` (``parallel.ulysses_overlap``) pipelines this: every rank's heads are cut
    into that many sub-groups, and the all-to-all of sub-group s + 1 (and the return of sub-group
    s) is in flight while sub-group s attends. Heads are independent, so the output is the same.
    ``fp8``: the payloads travel as float8 with a per-tensor scale (``parallel.comm_dtype=fp8``).
    """
    batch, heads, local, dim = q.shape
    lengths = group.lengths(local, q.device)
    head_sizes = split_sizes(heads, group.size)
    first_head = [sum(head_sizes[:j]) for j in range(group.size)]
    # per rank, per sub-group: how many of that rank's heads, and the first of them
    sub_sizes = [split_sizes(h, head_groups) for h in head_sizes]
    sub_first = [[first_head[j] + sum(sizes[:s]) for s in range(head_groups)] for j, sizes in enumerate(sub_sizes)]
    me = group.rank

    def send_heads(s: int):
        pieces = [[t[:, sub_first[j][s]:sub_first[j][s] + sub_sizes[j][s]] for t in (q, k, v)] for j in range(group.size)]
        mine = sub_sizes[me][s]
        return group.exchange(pieces, [[batch * mine * n * dim] * 3 for n in lengths], fp8=fp8)

    def attend_heads(s: int, received) -> torch.Tensor:
        mine = sub_sizes[me][s]
        q_, k_, v_ = (torch.cat([per[i].view(batch, mine, n, dim) for per, n in zip(received, lengths)], dim=2)
                      for i in range(3))
        if mine == 0:  # more Ulysses ranks (or sub-groups) than heads: nothing to attend here
            return q_
        return attend(q_, k_, v_, key_mask)

    def return_heads(s: int, out: torch.Tensor):
        pieces = [[p] for p in out.split(lengths, dim=2)]
        return group.exchange(pieces, [[batch * sub_sizes[j][s] * local * dim] for j in range(group.size)], fp8=fp8)

    returning = []
    incoming = send_heads(0)
    for s in range(head_groups):
        received = incoming.wait()
        if s + 1 < head_groups:
            incoming = send_heads(s + 1)  # in flight while sub-group s attends
        returning.append(return_heads(s, attend_heads(s, received).contiguous()))
    outputs = [pending.wait() for pending in returning]  # [sub-group][source rank][0]
    return torch.cat([outputs[s][j][0].view(batch, sub_sizes[j][s], local, dim)
                      for j in range(group.size) for s in range(head_groups)], dim=1)


def ulysses_gather_keys(mask: torch.Tensor, group: SequenceGroup, lengths: list[int]) -> torch.Tensor:
    """The ``(B, S_local)`` key mask of every rank of the group, concatenated to ``(B, S_group)``."""
    batch = mask.shape[0]
    received = group.all_to_all([mask] * group.size, [batch * n for n in lengths])
    return torch.cat([r.view(batch, n) for r, n in zip(received, lengths)], dim=1)


def ring_attention(q, k, v, key_mask, scale, ring: SequenceGroup) -> torch.Tensor:
    """Attention of the local queries over every rank's keys, key/value chunks passed around the ring."""
    batch, heads, _, dim = k.shape
    lengths = ring.lengths(k.shape[2], k.device)
    me, size = ring.rank, ring.size
    ranks = dist.get_process_group_ranks(ring.group)
    send_to, receive_from = ranks[(me + 1) % size], ranks[(me - 1) % size]

    def pack(k_, v_, m_):
        parts = [k_.reshape(-1), v_.reshape(-1)] + ([m_.reshape(-1)] if m_ is not None else [])
        return torch.cat(parts)

    def unpack(flat, n):
        kv = batch * heads * n * dim
        k_ = flat[:kv].view(batch, heads, n, dim)
        v_ = flat[kv:2 * kv].view(batch, heads, n, dim)
        m_ = flat[2 * kv:].view(batch, n) if key_mask is not None else None
        return k_, v_, m_

    current = pack(k, v, key_mask.to(k.dtype) if key_mask is not None else None)
    out = lse = None
    for step in range(size):
        owner = (me - step) % size
        pending = None
        if step < size - 1:
            incoming = (me - step - 1) % size
            n_in = lengths[incoming]
            buffer = current.new_empty(batch * heads * n_in * dim * 2 + (batch * n_in if key_mask is not None else 0))
            with ring.stats.measure(current.device, current.numel() * current.element_size()):
                pending = dist.batch_isend_irecv([
                    dist.P2POp(dist.isend, current, send_to, group=ring.group),
                    dist.P2POp(dist.irecv, buffer, receive_from, group=ring.group),
                ])
        k_, v_, m_ = unpack(current, lengths[owner])
        part_out, part_lse = attention_with_lse(q, k_, v_, m_, scale)
        if out is None:
            out, lse = part_out.float(), part_lse
        else:
            merged = torch.logaddexp(lse, part_lse)
            out = out * torch.exp(lse - merged)[..., None] + part_out.float() * torch.exp(part_lse - merged)[..., None]
            lse = merged
        if pending is not None:
            with ring.stats.measure(current.device):
                for request in pending:
                    request.wait()
            current = buffer
    return out.to(q.dtype)


class ContextParallelAttention:
    """SDPA over a sequence sharded on ``ulysses`` x ``ring`` ranks (either may be size 1).

    ``fp8``: the Ulysses all-to-all payloads travel in float8 (``parallel.comm_dtype=fp8``);
    ``head_groups``: Ulysses pipelined over that many head sub-groups (``parallel.ulysses_overlap``).
    Both can change between calls (:meth:`ParallelTransform.exact_communication`)."""

    def __init__(self, ulysses: SequenceGroup, ring: SequenceGroup, fp8: bool = False, head_groups: int = 1):
        self.ulysses = ulysses
        self.ring = ring
        self.fp8 = fp8
        self.head_groups = head_groups

    def __call__(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if dropout_p or is_causal or query.dim() != 4 or key.shape[1] != query.shape[1]:
            raise DitEngineError(
                "context parallelism needs non-causal, dropout-free attention with as many key as query heads "
                f"(got dropout_p={dropout_p}, is_causal={is_causal}, query {tuple(query.shape)}, key {tuple(key.shape)}); "
                "use parallel=none for this model"
            )
        key_mask = key_padding_mask(attn_mask, key.shape[0], key.shape[2], query.dtype)
        if self.ulysses.size == 1:
            return self._attend(query, key, value, key_mask, scale)
        if key.shape[2] != query.shape[2]:
            raise DitEngineError("context parallel self-attention needs as many keys as queries on each rank; "
                                 "mark cross-attention modules in the adapter's cross_attention_modules")
        if key_mask is not None:
            lengths = self.ulysses.lengths(query.shape[2], query.device)
            key_mask = ulysses_gather_keys(key_mask.contiguous(), self.ulysses, lengths)
        return ulysses_attention(query, key, value, key_mask, scale, self.ulysses,
                                 lambda q, k, v, m: self._attend(q, k, v, m, scale), fp8=self.fp8,
                                 head_groups=self.head_groups)

    def _attend(self, q, k, v, key_mask, scale) -> torch.Tensor:
        """Attention of the local heads over the Ring group's whole sequence."""
        if self.ring.size > 1:
            return ring_attention(q, k, v, key_mask, scale, self.ring)
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


class SdpaInterceptor(TorchFunctionMode):
    """While active, ``F.scaled_dot_product_attention`` calls go to ``attention``; counts them so a
    module whose attention never reached SDPA (another attention backend) is caught, not ignored."""

    def __init__(self, attention: ContextParallelAttention):
        super().__init__()
        self.attention = attention
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.calls += 1
            return self.attention(*args, **kwargs)
        return func(*args, **kwargs)
