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


def ulysses_to_heads(x: torch.Tensor, group: SequenceGroup, lengths: list[int]) -> torch.Tensor:
    """``(B, H, S_local, D)`` -> ``(B, H_mine, S_group, D)``: my head group over the group's whole sequence."""
    batch, heads, local, dim = x.shape
    head_sizes = split_sizes(heads, group.size)
    pieces = list(x.split(head_sizes, dim=1))
    mine = head_sizes[group.rank]
    received = group.all_to_all(pieces, [batch * mine * n * dim for n in lengths])
    return torch.cat([r.view(batch, mine, n, dim) for r, n in zip(received, lengths)], dim=2)


def ulysses_to_sequence(x: torch.Tensor, group: SequenceGroup, lengths: list[int], heads: int) -> torch.Tensor:
    """Inverse of :func:`ulysses_to_heads`: ``(B, H_mine, S_group, D)`` -> ``(B, H, S_local, D)``."""
    batch, mine, _, dim = x.shape
    head_sizes = split_sizes(heads, group.size)
    local = lengths[group.rank]
    pieces = list(x.split(lengths, dim=2))
    received = group.all_to_all(pieces, [batch * h * local * dim for h in head_sizes])
    return torch.cat([r.view(batch, h, local, dim) for r, h in zip(received, head_sizes)], dim=1)


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
    """SDPA over a sequence sharded on ``ulysses`` x ``ring`` ranks (either may be size 1)."""

    def __init__(self, ulysses: SequenceGroup, ring: SequenceGroup):
        self.ulysses = ulysses
        self.ring = ring

    def __call__(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if dropout_p or is_causal or query.dim() != 4 or key.shape[1] != query.shape[1]:
            raise DitEngineError(
                "context parallelism needs non-causal, dropout-free attention with as many key as query heads "
                f"(got dropout_p={dropout_p}, is_causal={is_causal}, query {tuple(query.shape)}, key {tuple(key.shape)}); "
                "use parallel=none for this model"
            )
        heads = query.shape[1]
        key_mask = key_padding_mask(attn_mask, key.shape[0], key.shape[2], query.dtype)
        if self.ulysses.size > 1:
            lengths = self.ulysses.lengths(query.shape[2], query.device)
            if key.shape[2] != query.shape[2]:
                raise DitEngineError("context parallel self-attention needs as many keys as queries on each rank; "
                                     "mark cross-attention modules in the adapter's cross_attention_modules")
            query, key, value = (ulysses_to_heads(t.contiguous(), self.ulysses, lengths) for t in (query, key, value))
            if key_mask is not None:
                key_mask = ulysses_gather_keys(key_mask.contiguous(), self.ulysses, lengths)
        if query.shape[1] == 0:  # more Ulysses ranks than heads: this rank has none (any shape)
            out = query
        elif self.ring.size > 1:
            out = ring_attention(query, key, value, key_mask, scale, self.ring)
        else:
            mask = key_mask[:, None, None, :] if key_mask is not None else None
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
        if self.ulysses.size > 1:
            out = ulysses_to_sequence(out.contiguous(), self.ulysses, lengths, heads)
        return out


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
