"""Statistics of post-softmax attention probabilities, accumulated over query chunks in bounded memory.

For probabilities P of shape (B, H, Nq, Nk) (rows sum to 1), per head:

* ``below[eps]``: fraction of entries < eps;
* ``keys[tau]``: keys needed per query row to cover mass tau (largest first), averaged over rows; and the same
  as a fraction of Nk (``keys_frac[tau]``);
* ``entropy``: row entropy / ln(Nk) (1 = uniform, 0 = one-hot), averaged over rows;
* for square blocks of side b (query block × key block): ``empty_blocks[b, eps]``, the fraction of blocks whose
  entries are all < eps, and ``blocks[b, tau]``, key blocks needed per query block to cover mass tau of that
  query block's rows (blocks ranked by their mass), as a fraction of the key blocks.

Ragged edges: when Nq or Nk is not a multiple of b, the last block of a row or column is partial and counts as
one block (what a block-sparse kernel with padding processes).

Memory: P is never held whole. :func:`probabilities_in_chunks` yields query chunks of ``rows`` rows with
``rows`` a multiple of every block side, chosen so a chunk holds at most ``max_elements`` probabilities
(default 2^22: 16 MiB in float32, plus one sorted copy), whatever the token count.
"""

from __future__ import annotations

import math

import torch


class HeadStats:
    """Sums over query rows (and blocks) for each head; :meth:`result` turns them into the statistics."""

    def __init__(self, heads: int, n_keys: int, eps: tuple[float, ...], taus: tuple[float, ...],
                 blocks: tuple[int, ...], keep_masks: bool = False):
        self.heads, self.n_keys, self.eps, self.taus, self.blocks = heads, n_keys, eps, taus, blocks
        # keep_masks: also keep what the statistics count, per (batch, head): the key blocks kept per query block
        # at each (block, tau) and the keys kept per query row at each tau (the mask store's content)
        self.keep_masks = keep_masks
        self.block_masks: dict[tuple[int, float], list[torch.Tensor]] = {(b, t): [] for b in blocks for t in taus}
        self.row_keys: dict[float, list[torch.Tensor]] = {t: [] for t in taus}
        z = lambda: torch.zeros(heads, dtype=torch.float64)  # noqa: E731
        self.rows = z()
        self.below = {e: z() for e in eps}
        self.keys = {t: z() for t in taus}
        self.entropy = z()
        self.block_rows = {b: z() for b in blocks}  # query blocks seen
        self.empty = {(b, e): z() for b in blocks for e in eps}
        self.block_cover = {(b, t): z() for b in blocks for t in taus}

    def add(self, p: torch.Tensor) -> None:
        """Accumulate a chunk of probabilities (B, H, rows, Nk); its rows must start on a block boundary."""
        p = p.to(torch.float32)
        b_, h, rows, nk = p.shape
        self.rows += b_ * rows
        for e in self.eps:
            self.below[e] += (p < e).sum(dim=(0, 2, 3)).double() / nk
        ranked = p.sort(dim=-1, descending=True).values.cumsum(dim=-1)  # (B, H, rows, Nk)
        for t in self.taus:
            # keys needed: first index where the cumulative mass reaches tau, + 1 (float slack: tau - 1e-6)
            needed = (ranked < t - 1e-6).sum(dim=-1) + 1
            self.keys[t] += needed.clamp(max=nk).sum(dim=(0, 2)).double()
            if self.keep_masks:
                self.row_keys[t].append(needed.clamp(max=nk).to(torch.int32))
        del ranked
        plogp = torch.where(p > 0, p * p.log(), torch.zeros((), dtype=p.dtype))
        self.entropy += (-plogp.sum(dim=-1)).sum(dim=(0, 2)).double() / (math.log(nk) if nk > 1 else 1.0)
        for bs in self.blocks:
            self._add_blocks(p, bs)

    def _add_blocks(self, p: torch.Tensor, bs: int) -> None:
        b_, h, rows, nk = p.shape
        qb, kb = math.ceil(rows / bs), math.ceil(nk / bs)
        # a single block along a side holds only the real tokens (no padding up to a huge block side)
        bq, bk = (rows if qb == 1 else bs), (nk if kb == 1 else bs)
        pad = torch.nn.functional.pad(p, (0, kb * bk - nk, 0, qb * bq - rows))  # zeros: below every eps
        tiles = pad.view(b_, h, qb, bq, kb, bk)
        block_max = tiles.amax(dim=(3, 5))  # (B, H, qb, kb)
        block_mass = tiles.sum(dim=(3, 5))  # (B, H, qb, kb)
        real_rows = torch.full((qb,), bq, dtype=torch.float32)
        real_rows[-1] = rows - (qb - 1) * bq
        self.block_rows[bs] += b_ * qb
        for e in self.eps:
            self.empty[(bs, e)] += (block_max < e).sum(dim=(0, 2, 3)).double() / kb
        share = block_mass / real_rows.view(1, 1, qb, 1)  # mean mass per row of the query block
        ordered = share.sort(dim=-1, descending=True)
        ranked = ordered.values.cumsum(dim=-1)
        if self.keep_masks:  # each block's rank in its query block's order (0: the most mass)
            rank = torch.empty_like(ordered.indices).scatter_(
                -1, ordered.indices, torch.arange(kb).expand_as(ordered.indices).contiguous())
        for t in self.taus:
            needed = ((ranked < t - 1e-6).sum(dim=-1) + 1).clamp(max=kb)
            self.block_cover[(bs, t)] += needed.sum(dim=(0, 2)).double() / kb
            if self.keep_masks:  # the blocks counted: the `needed` first in rank
                self.block_masks[(bs, t)].append(rank < needed.unsqueeze(-1))

    def masks(self) -> tuple[dict, dict]:
        """What :meth:`add` kept (``keep_masks``): block masks (B, H, query blocks, key blocks) per (block, tau) and
        kept keys per query row (B, H, Nq) per tau, the chunks joined."""
        blocks = {k: torch.cat(v, dim=2) for k, v in self.block_masks.items() if v}
        rows = {t: torch.cat(v, dim=2) for t, v in self.row_keys.items() if v}
        return blocks, rows

    def result(self) -> list[dict]:
        """One dict per head with the statistics (column names as in the sparsity table)."""
        out = []
        for i in range(self.heads):
            r = self.rows[i].item() or 1.0
            row = {"head": i, "entropy": self.entropy[i].item() / r}
            for e in self.eps:
                row[f"below_{e:g}"] = self.below[e][i].item() / r
            for t in self.taus:
                row[f"keys_{t:g}"] = self.keys[t][i].item() / r
                row[f"keys_frac_{t:g}"] = self.keys[t][i].item() / r / self.n_keys
            for bs in self.blocks:
                nb = self.block_rows[bs][i].item() or 1.0
                for e in self.eps:
                    row[f"empty_blocks_{bs}_{e:g}"] = self.empty[(bs, e)][i].item() / nb
                for t in self.taus:
                    row[f"blocks_{bs}_{t:g}"] = self.block_cover[(bs, t)][i].item() / nb
            out.append(row)
        return out


def chunk_rows(n_queries: int, n_keys: int, batch_heads: int, blocks: tuple[int, ...],
               max_elements: int = 2**22) -> int:
    """Query rows per chunk: a multiple of every block side, at most ``max_elements`` probabilities."""
    unit = math.lcm(*blocks) if blocks else 1
    fit = max(1, max_elements // max(1, n_keys * batch_heads))
    return min(max(unit, fit // unit * unit), math.ceil(n_queries / unit) * unit)


def probabilities_in_chunks(q: torch.Tensor, k: torch.Tensor, blocks: tuple[int, ...], attn_mask=None,
                            max_elements: int = 2**22):
    """softmax(q kᵀ / sqrt(d)) in query chunks (B, H, rows, Nk), computed in float32."""
    b, h, nq, d = q.shape
    rows = chunk_rows(nq, k.shape[2], b * h, blocks, max_elements)
    kt = k.to(torch.float32).transpose(-1, -2)
    for i in range(0, nq, rows):
        s = q[:, :, i:i + rows].to(torch.float32) @ kt / math.sqrt(d)
        if attn_mask is not None:
            m = attn_mask[..., i:i + rows, :] if attn_mask.shape[-2] > 1 else attn_mask
            s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m
        yield s.softmax(dim=-1)
