"""Block-sparse attention: softmax attention restricted to kept (query block × key block) tiles.

``block_sparse_attention(q, k, v, block_mask, block_size)`` takes SDPA's shapes — q (B, H, N, d), k (B, H, M, d),
v (B, H, M, dv) — and a boolean ``block_mask`` of shape (B, H, ceil(N/b), ceil(M/b)) (leading dims may be 1 to
broadcast). Each query block attends only to the keys of its kept key blocks; the softmax is over those keys
alone. A query block with no kept key block outputs zeros (there is nothing to attend to). Ragged edges: the
last query/key block may be partial; its missing tokens are padding and never receive probability.

CPU path (PyTorch ops): for every query block, the kept key blocks are gathered into one contiguous K/V slab
(padded to the row with the most kept blocks) and PyTorch's fused SDPA runs once per query block, batched, over
only those keys — attention work proportional to the kept fraction, no score matrix in memory. Query blocks are
processed in chunks so the gathered slabs stay bounded. The gather copies K and V once per query block, which
is what this path pays at high density (measured in docs/benchmarks.md); a fused kernel is the next step. A mask
that keeps every block runs dense SDPA itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffprobe.errors import DiffprobeError


def _check(q, k, v, block_mask, block_size):
    if not isinstance(block_size, int) or block_size <= 0:
        raise DiffprobeError(f"block size must be a positive number of tokens, got {block_size!r}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise DiffprobeError("q, k and v must be 4-D (batch, heads, tokens, head_dim), got "
                             f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise DiffprobeError(f"mismatched shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
                             "expected q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv)")
    if len({q.device, k.device, v.device, block_mask.device}) > 1:
        raise DiffprobeError(f"q, k, v and block_mask must be on one device, got {q.device}, {k.device}, "
                             f"{v.device}, {block_mask.device}")
    if len({q.dtype, k.dtype, v.dtype}) > 1:
        raise DiffprobeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, h, n, _ = q.shape
    qb, kb = math.ceil(n / block_size), math.ceil(k.shape[2] / block_size)
    expected = (b, h, qb, kb)
    if block_mask.dtype != torch.bool:
        raise DiffprobeError(f"block_mask must be torch.bool of shape {expected}, got dtype {block_mask.dtype}")
    if block_mask.dim() != 4 or any(s not in (1, e) for s, e in zip(block_mask.shape, expected, strict=True)) \
            or block_mask.shape[2:] != expected[2:]:
        raise DiffprobeError(f"block_mask must have shape {expected} (batch and heads may be 1), "
                             f"got {tuple(block_mask.shape)}")
    return qb, kb


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor,
                           block_size: int, max_elements: int = 2**24) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v over the kept blocks only; see the module docstring."""
    qb, kb = _check(q, k, v, block_mask, block_size)
    b, h, n, d = q.shape
    m, dv = k.shape[2], v.shape[-1]
    bs = block_size
    if bool(block_mask.all()):  # nothing to skip: the dense fused kernel is the block-sparse kernel
        return F.scaled_dot_product_attention(q, k, v)
    mask = block_mask.expand(b, h, qb, kb)
    counts = mask.sum(-1)  # (B, H, qb) kept key blocks per query block
    kmax = int(counts.max()) if counts.numel() else 0
    out = torch.zeros(b, h, n, dv, dtype=q.dtype, device=q.device)
    if kmax == 0:
        return out
    # kept key-block indices first, in ascending order (a stable sort of "not kept")
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[..., :kmax]  # (B, H, qb, kmax)
    valid = torch.gather(mask, -1, order)  # (B, H, qb, kmax): False where a row has fewer than kmax blocks
    pad_m, pad_n = kb * bs - m, qb * bs - n
    kp = F.pad(k, (0, 0, 0, pad_m)).view(b, h, kb, bs, d)
    vp = F.pad(v, (0, 0, 0, pad_m)).view(b, h, kb, bs, dv)
    qp = F.pad(q, (0, 0, 0, pad_n)).view(b, h, qb, bs, d)
    key_ok = torch.ones(kb, bs, dtype=torch.bool, device=q.device)
    if pad_m:
        key_ok[-1, bs - pad_m:] = False  # padding keys of the ragged last block
    plain = bool(valid.all()) and not pad_m  # every row keeps kmax whole blocks: no mask needed
    chunk = max(1, max_elements // max(1, b * h * kmax * bs * max(d, dv)))  # query blocks per step
    for s0 in range(0, qb, chunk):
        e = min(qb, s0 + chunk)
        c = e - s0
        idx = order[:, :, s0:e].reshape(b, h, c * kmax)
        kg = torch.gather(kp, 2, idx[..., None, None].expand(b, h, c * kmax, bs, d))
        vg = torch.gather(vp, 2, idx[..., None, None].expand(b, h, c * kmax, bs, dv))
        # one SDPA call per query block, batched: (B·H·c, 1, bs, d) against its (kmax·bs) gathered keys
        qs = qp[:, :, s0:e].reshape(b * h * c, 1, bs, d)
        ks = kg.view(b * h * c, 1, kmax * bs, d)
        vs = vg.view(b * h * c, 1, kmax * bs, dv)
        if plain:
            o = F.scaled_dot_product_attention(qs, ks, vs)
        else:
            allowed = valid[:, :, s0:e, :, None] & key_ok[order[:, :, s0:e]]  # (B, H, c, kmax, bs)
            am = allowed.reshape(b * h * c, 1, 1, kmax * bs)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=am)
            empty = ~allowed.reshape(b * h * c, kmax * bs).any(-1)
            o[empty] = 0  # a query block with no kept key: nothing to attend to
        lo, hi = s0 * bs, min(n, e * bs)
        out[:, :, lo:hi] = o.view(b, h, c * bs, dv)[:, :, :hi - lo]
    return out


def masked_reference(q, k, v, block_mask, block_size) -> torch.Tensor:
    """The same attention in float64 with a dense token mask: the reference the kernel is checked against."""
    b, h, n, d = q.shape
    m = k.shape[2]
    tok = block_mask.expand(b, h, -1, -1).repeat_interleave(block_size, 2).repeat_interleave(block_size, 3)
    tok = tok[:, :, :n, :m]
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(d)
    s = s.masked_fill(~tok, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return p @ v.double()
