"""Scaling across a sweep: shares per layer class, fitted exponents, crossover, attention memory, bottlenecks.

Inputs are op tables of sweep points (one per resolution); outputs are plain tables and dicts. A *layer class*
is the layer type, with attention rows split into self and cross (``attn_score.self``); ``self_attention`` and
``cross_attention`` are the whole attention layers (QKV, scores, softmax, P·V, output projection), and
``self_attention_core`` the token-mixing part of self-attention (scores, softmax, P·V: quadratic in tokens).
Diffusion transformers add ``joint_attention`` / ``linear_attention``, ``attention_core`` (the quadratic part of
self and joint attention) and ``linear_layers`` (projections, FFN, other linears, adaLN: linear in tokens). A
mixture of experts (``moe_*`` layer types) counts in the ``ffn`` class and its GEMMs in ``linear_layers``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LINEAR_LAYERS = ("attn_qkv", "attn_out", "ffn", "linear", "modulation", "moe_router", "moe_shared", "moe_expert")
MOE_TYPES = ("moe_router", "moe_shared", "moe_expert", "moe_dispatch")  # a mixture of experts: a feed-forward
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def layer_class(ops: pd.DataFrame) -> pd.Series:
    """``layer_type``, with ``.self`` / ``.cross`` appended on attention rows."""
    suffix = np.where(ops["attn_kind"] != "", "." + ops["attn_kind"], "")
    return ops["layer_type"] + suffix


def class_totals(ops: pd.DataFrame, value: str, stage: str | None = None) -> dict[str, float]:
    """Layer class -> sum of ``value`` (optionally within one stage), plus ``self_attention`` and
    ``cross_attention`` (whole attention layers) and ``total``."""
    if stage is not None:
        ops = ops[ops["stage"] == stage]
    vals = ops[value].astype(float)
    out = {k: float(v) for k, v in vals.groupby(layer_class(ops)).sum().items()}
    for kind in ("self", "cross", "joint", "linear"):
        part = ops["attn_kind"] == kind
        if kind in ("self", "cross") or part.any():
            out[f"{kind}_attention"] = float(vals[part].sum())
    quadratic = ops["layer_type"].isin(("attn_score", "attn_softmax", "attn_pv"))
    out["self_attention_core"] = float(vals[quadratic & (ops["attn_kind"] == "self")].sum())
    # a diffusion transformer's two sides: token mixing (scores, softmax, P·V over image tokens, self or joint)
    # against the per-token GEMMs (projections, FFN, other linears, adaLN)
    out["attention_core"] = float(vals[quadratic & ops["attn_kind"].isin(("self", "joint"))].sum())
    out["linear_layers"] = float(vals[ops["layer_type"].isin(LINEAR_LAYERS)].sum())
    moe = ops["layer_type"].isin(MOE_TYPES)
    if moe.any():  # the feed-forward class holds the mixtures of experts (router, experts, dispatch) too
        out["ffn"] = out.get("ffn", 0.0) + float(vals[moe].sum())
    out["total"] = float(vals.sum())
    return out


def fit_exponent(sides, values) -> dict | None:
    """Least-squares fit of ``log value = k log side + b``: cost ∝ side^k.

    Returns ``k``, ``b``, the RMS residual in natural-log units and the points used (``None`` with fewer than
    two positive points)."""
    pts = [(s, v) for s, v in zip(sides, values, strict=True) if v is not None and v > 0 and s > 0]
    if len(pts) < 2 or len({s for s, _ in pts}) < 2:
        return None
    x = np.log([s for s, _ in pts])
    y = np.log([v for _, v in pts])
    k, b = np.polyfit(x, y, 1)
    resid = y - (k * x + b)
    return {"k": float(k), "b": float(b), "rms_log_residual": float(np.sqrt(np.mean(resid**2))), "points": len(pts)}


def crossover(sides, a, b, unit: str = "px") -> dict | None:
    """The side at which series ``a`` overtakes ``b`` (both positive, same sides, ascending).

    Between two sweep points where ``a - b`` changes sign, the crossover is found by log-log interpolation of
    both series. If ``a`` never overtakes within the sweep, the two fitted power laws are extrapolated (marked
    ``extrapolated``); ``None`` when they never cross or ``a`` leads everywhere."""
    pts = sorted((s, x, y) for s, x, y in zip(sides, a, b, strict=True) if x > 0 and y > 0)
    if len(pts) < 2:
        return None
    if pts[0][1] >= pts[0][2]:
        return {"side": float(pts[0][0]), "extrapolated": False, "already_ahead": True}
    for (s0, a0, b0), (s1, a1, b1) in zip(pts, pts[1:], strict=False):
        if a1 >= b1:
            # log(a/b) is linear in log(side) between the two points: find its zero
            d0, d1 = math.log(a0 / b0), math.log(a1 / b1)
            t = d0 / (d0 - d1)
            side = math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
            return {"side": side, "extrapolated": False, "already_ahead": False}
    fa, fb = fit_exponent([p[0] for p in pts], [p[1] for p in pts]), fit_exponent([p[0] for p in pts],
                                                                                   [p[2] for p in pts])
    if fa is None or fb is None or fa["k"] <= fb["k"]:
        return None
    log_side = (fb["b"] - fa["b"]) / (fa["k"] - fb["k"])
    limit = EXTRAPOLATION_LIMIT * pts[-1][0]
    if log_side > math.log(limit):  # the fits' crossing lies too far out to mean anything (or to print)
        return {"side": None, "extrapolated": True, "already_ahead": False, "beyond": float(limit),
                "why": f"the fitted power laws cross only beyond {EXTRAPOLATION_LIMIT}x the largest swept value "
                       f"({limit:.0f} {unit}): too far from the measured points to trust"}
    return {"side": math.exp(log_side), "extrapolated": True, "already_ahead": False}


EXTRAPOLATION_LIMIT = 8  # a crossover extrapolated past this multiple of the largest swept side is not given


def _shape_list(shapes) -> list[list[int]]:
    return [list(s) for s in shapes] if shapes is not None else []


def attention_memory(ops: pd.DataFrame) -> dict:
    """The largest attention score matrix of the run: its bytes if materialized (B·heads·N·M elements) and the
    working set of a fused kernel for the same call (Q, K, V and output; the scores stay on chip)."""
    rows = ops[ops["layer_type"] == "attn_score"]
    best = {"materialized_bytes": 0, "fused_bytes": 0, "shape": None, "module": None}
    for r in rows.itertuples(index=False):
        ins = _shape_list(r.input_shapes)
        item = ITEMSIZE.get(r.dtype, 4)
        if r.op == "sdpa":
            q, k = ins[0], ins[1]
            scores = [*q[:-1], k[-2]]
            fused = 2 * math.prod(q) + 2 * math.prod(k)  # q, k, v (k-shaped), output (q-shaped)
        else:  # classic processor: the score matrix is the op's output
            scores = _shape_list(r.output_shapes)[0]
            fused = sum(math.prod(s) for s in ins[-2:]) * 2
        materialized = math.prod(scores) * item
        if materialized > best["materialized_bytes"]:
            best = {"materialized_bytes": materialized, "fused_bytes": fused * item, "shape": scores,
                    "module": r.module}
    return best


def bottlenecks(ops: pd.DataFrame, value: str = "flops", n: int = 10) -> list[dict]:
    """The ``n`` (stage, UNet level, layer class) groups with the largest share of ``value``, largest first."""
    frame = ops.assign(layer_class=layer_class(ops), v=ops[value].astype(float))
    total = frame["v"].sum()
    if not total:
        return []
    g = frame.groupby(["stage", "level", "tokens", "layer_class"], sort=False)["v"].sum()
    # largest first; equal costs (the identical blocks of a DiT) in block order, block.2 before block.10
    order = sorted(g.items(), key=lambda kv: (-kv[1], _natural(kv[0][1]), kv[0][3]))[:n]
    return [{"stage": s, "level": lv, "tokens": int(t), "layer_class": c, value: float(v), "share": float(v / total)}
            for (s, lv, t, c), v in order]


def _natural(text: str) -> tuple:
    """``block.10`` after ``block.9``: digit runs compare as numbers."""
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text)))
