"""Sparsity summaries: the probe's per-call statistics (one row per resolution × step × layer × head) averaged."""

from __future__ import annotations


def _means(frame, key: str) -> dict:
    cols = [c for c in frame.columns if c not in ("height", "width", "layer", "level", "attn_kind", "step",
                                                  "q_tokens", "k_tokens", "head")]
    return {str(k): {c: float(v) for c, v in g[cols].mean().items()} for k, g in frame.groupby(key, sort=False)}


def summarize(table) -> dict:
    """Means of every statistic by resolution, then within each by self/cross, UNet level and step."""
    out = {}
    for (h, w), g in table.groupby(["height", "width"], sort=False):
        out[f"{h}x{w}"] = {"by_kind": _means(g, "attn_kind"), "by_level": _means(g, "level"),
                           "by_step": _means(g, "step"), "calls": int(len(g))}
    return out
