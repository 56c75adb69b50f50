"""The sparsity probe: statistics of every denoiser attention call's probabilities, per layer × head × step.

The probe is an attention core (see :mod:`diffprobe.attention.core`) that returns exactly the dense SDPA output,
so the run and its image are unchanged, and on the side recomputes the probabilities in query chunks
(:mod:`diffprobe.attention.stats`) to accumulate their statistics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch.nn.functional as F

from diffprobe.attention.core import CallInfo
from diffprobe.attention.stats import HeadStats, probabilities_in_chunks
from diffprobe.errors import DiffprobeError
from diffprobe.parsing import parse_floats  # noqa: F401  (imported from here too)

RANDOM_NOTE = ("random weights: attention on untrained weights is near-uniform, so these sparsity figures say "
               "nothing about a trained model; use --model digits or --weights")


@dataclass
class SparsityConfig:
    eps: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    taus: tuple[float, ...] = (0.9, 0.95, 0.99)
    blocks: tuple[int, ...] = (32, 64, 128)
    max_elements: int = 2**22
    save_masks: bool = False  # keep every call's block masks and per-row kept keys (the mask store's content)
    # video models: 3D tiles (frames, height, width of the token grid) whose block statistics the video's
    # self-attention calls also get, as columns tiles_TxHxW_τ and empty_tiles_TxHxW_ε
    tiles: tuple[tuple[int, int, int], ...] = ()

    def validate(self) -> "SparsityConfig":
        if any(b <= 0 for b in self.blocks):
            raise DiffprobeError("--blocks values must be positive block sides (tokens)")
        if any(not (0 <= e < 1) for e in self.eps):
            raise DiffprobeError("--eps values must be in [0, 1)")
        if any(not (0 < t <= 1) for t in self.taus):
            raise DiffprobeError("--tau values must be in (0, 1]")
        return self


class SparsityProbe:
    """An attention core: dense output, statistics on the side; ``rows`` holds one dict per layer×head×call.
    ``grid``: a video's token grid (latent frames, height, width), for the 3D tiles of ``sc.tiles``."""

    def __init__(self, sc: SparsityConfig, grid: tuple[int, int, int] | None = None):
        self.sc, self.grid = sc, grid
        self.rows: list[dict] = []
        self.calls: Counter[str] = Counter()
        self.masks: list[dict] = []  # save_masks: one entry per call (see diffprobe.records.masks)

    def core(self, q, k, v, attn_mask, call: CallInfo):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        groups = key_groups(attn_mask, q.shape[0], k.shape[2])
        stats = HeadStats(call.heads, call.k_tokens, self.sc.eps, self.sc.taus, self.sc.blocks,
                          keep_masks=self.sc.save_masks)
        if groups is None or self.sc.save_masks:  # the call as computed (masked keys included: the mask store's)
            for p in probabilities_in_chunks(q, k, self.sc.blocks, attn_mask, self.sc.max_elements):
                stats.add(p)
        step = call.step
        if self.sc.save_masks:
            blocks, rows = stats.masks()
            self.masks.append({"layer": call.name, "step": step, "attn_kind": call.kind, "q_tokens": call.q_tokens,
                               "k_tokens": call.k_tokens, "blocks": blocks, "rows": rows})
        self.calls[call.name] += 1
        results = [(call.k_tokens, stats.result())] if groups is None else [
            (len(keys), self._stats(q[idx], k[idx][:, :, keys])) for idx, keys in groups]
        if groups is None and attn_mask is None and self._tiled(call):
            for row, tiled in zip(results[0][1], self._tile_stats(q, k), strict=True):
                row.update(tiled)
        for n_keys, heads in results:
            for row in heads:
                if n_keys == 1 and groups is not None:  # a branch left one key by its mask (PixArt's unconditional
                    # one): all the mass on it, uniform and one-hot alike, no entropy to average in
                    row["entropy"] = float("nan")
                self.rows.append({"layer": call.name, "level": call.level, "attn_kind": call.kind, "step": step,
                                  "call": call.call,
                                  "q_tokens": call.q_tokens, "k_tokens": n_keys,
                                  "keys_masked": call.k_tokens - n_keys, **row})
        return out

    def _tiled(self, call: CallInfo) -> bool:
        """Whether the call is the video's self-attention (every query and key a grid token, no text keys)."""
        import math

        n = math.prod(self.grid) if self.grid else 0
        return bool(self.sc.tiles) and call.q_tokens == call.k_tokens == n and call.text_keys is None

    def _tile_stats(self, q, k) -> list[dict]:
        """Per head, the block statistics of each 3D tile shape: q and k in tile order, blocks of one tile."""
        import math

        from diffprobe.attention.tiles import tile_order

        per_head = [{} for _ in range(q.shape[1])]
        for tile in self.sc.tiles:
            vol, name = math.prod(tile), "x".join(map(str, tile))
            perm = tile_order(self.grid, tile).to(q.device)
            stats = HeadStats(q.shape[1], k.shape[2], self.sc.eps, self.sc.taus, (vol,))
            for p in probabilities_in_chunks(q[:, :, perm], k[:, :, perm], (vol,), None, self.sc.max_elements):
                stats.add(p)
            for out, row in zip(per_head, stats.result(), strict=True):
                for e in self.sc.eps:
                    out[f"empty_tiles_{name}_{e:g}"] = row[f"empty_blocks_{vol}_{e:g}"]
                for t in self.sc.taus:
                    out[f"tiles_{name}_{t:g}"] = row[f"blocks_{vol}_{t:g}"]
        return per_head

    def _stats(self, q, k) -> list[dict]:
        """Statistics of q against exactly the keys ``k`` (no mask)."""
        stats = HeadStats(q.shape[1], k.shape[2], self.sc.eps, self.sc.taus, self.sc.blocks)
        for p in probabilities_in_chunks(q, k, self.sc.blocks, None, self.sc.max_elements):
            stats.add(p)
        return stats.result()


def key_groups(attn_mask, batch: int, n_keys: int):
    """For a key-padding mask (each batch element attends to a fixed set of keys, the same for every head and
    query), the batch elements grouped by the keys they attend to, as (batch indices, key indices) pairs: the
    statistics then count only keys that can get probability (a masked key's exact zero is no sparsity of the
    model's: PixArt's unconditional branch masks all but one of its text tokens). None when there is no mask, when
    it masks nothing, or when it is not a key-padding mask (those calls keep the mask in their statistics)."""
    import torch

    if attn_mask is None:
        return None
    m = attn_mask
    if m.dtype != torch.bool:
        masked = m < -1e3  # additive: 0 attends, a large negative (or -inf) masks
        if not ((m == 0) | masked).all():
            return None  # a bias, not a mask
        m = ~masked
    m = m.expand(batch, *m.shape[1:]) if m.shape[0] == 1 else m
    if m.dim() < 2 or m.shape[-1] != n_keys or m.shape[0] != batch:
        return None
    rows = m.reshape(batch, -1, n_keys)
    if not (rows == rows[:, :1]).all():
        return None  # differs across heads or queries: not a key-padding mask
    valid = rows[:, 0]
    if valid.all() or not valid.any(dim=-1).all():
        return None
    patterns, inverse = torch.unique(valid, dim=0, return_inverse=True)
    return [((inverse == i).nonzero().flatten(), pattern.nonzero().flatten()) for i, pattern in enumerate(patterns)]
