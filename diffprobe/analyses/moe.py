"""Mixtures of experts from the records: how many tokens each routed expert ran, call by call.

Input: a run's op table; output: a plain dict. Each routed expert's first ``moe_expert`` record (its first linear)
holds the tokens it got in that call (the rows of its input); an MoE call is one step of one MoE layer (the
expert's parent module). The *load share* of an expert in a call is its tokens over the call's token
assignments (tokens x k): 1/experts everywhere under a balanced load."""

from __future__ import annotations

import math

import pandas as pd


def _rows(shape) -> int:
    return math.prod(int(s) for s in shape[:-1])


def expert_load(ops: pd.DataFrame) -> dict | None:
    """``calls`` (MoE layer calls seen), ``experts_per_call`` (routed experts that ran, mean), ``tokens_per_expert``
    (mean over calls and experts that ran), ``max_load_share`` / ``min_load_share`` (over calls, of the experts that
    ran), None without routed experts."""
    rows = ops[ops["layer_type"] == "moe_expert"]
    if not len(rows):
        return None
    expert = rows["module"].str.rsplit(".", n=1).str[0]  # the expert module (the linear's parent)
    first = rows.assign(expert=expert).groupby(["step", "cfg", "expert"], sort=False).head(1)
    tokens = first["input_shapes"].map(lambda shapes: _rows(shapes[0]))
    layer = first["expert"].str.rsplit(".", n=1).str[0]  # the experts' container, one per MoE layer
    calls = pd.DataFrame({"step": first["step"], "cfg": first["cfg"], "layer": layer, "tokens": tokens})
    per_call = calls.groupby(["step", "cfg", "layer"], sort=False)["tokens"]
    share = calls["tokens"] / per_call.transform("sum")
    return {"calls": int(per_call.ngroups), "experts_per_call": float(per_call.size().mean()),
            "tokens_per_expert": float(calls["tokens"].mean()), "max_load_share": float(share.max()),
            "min_load_share": float(share.min())}
