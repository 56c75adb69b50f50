"""Sparsity summaries: the probe's per-call statistics (one row per resolution × step × layer × head) averaged."""

from __future__ import annotations


def _means(frame, key: str) -> dict:
    cols = [c for c in frame.columns if c not in ("height", "width", "layer", "level", "attn_kind", "step",
                                                  "q_tokens", "k_tokens", "head", "keys_masked")]
    return {str(k): {c: float(v) for c, v in g[cols].mean().items()} for k, g in frame.groupby(key, sort=False)}


def summarize(table) -> dict:
    """Means of every statistic by resolution, then within each by self/cross, UNet level and step."""
    out = {}
    for (h, w), g in table.groupby(["height", "width"], sort=False):
        out[f"{h}x{w}"] = {"by_kind": _means(g, "attn_kind"), "by_level": _means(g, "level"),
                           "by_step": _means(g, "step"), "calls": int(len(g))}
    return out


def step_overlap(store, blocks, taus) -> dict:
    """How stable the kept blocks are from one probed step to the next, from a mask store: per (block, tau), the
    mean Jaccard overlap |A ∩ B| / |A ∪ B| of a self-attention layer's kept blocks (per batch x head) at
    consecutive steps, over layers and step pairs (1: the same blocks every step, so one mask could serve several
    steps). Empty when fewer than two steps were probed."""
    import numpy as np

    by_layer: dict[str, list[dict]] = {}
    for e in store.entries:
        if e["attn_kind"] == "self":
            by_layer.setdefault(e["layer"], []).append(e)
    out = {}
    for b in blocks:
        for t in taus:
            vals = []
            for entries in by_layer.values():
                entries = sorted(entries, key=lambda x: x["step"])
                for prev, cur in zip(entries, entries[1:], strict=False):
                    a, c = store.block_mask(prev, b, t), store.block_mask(cur, b, t)
                    union = np.logical_or(a, c).sum(axis=(-2, -1))
                    inter = np.logical_and(a, c).sum(axis=(-2, -1))
                    vals.append(float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0))))
            if vals:
                out[f"{b}_{t:g}"] = float(np.mean(vals))
    return out
