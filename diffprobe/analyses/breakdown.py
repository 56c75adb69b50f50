"""Breakdowns of the record table: pure functions ``(table, ...) -> table`` and their JSON shapes.

Every function takes the op-record DataFrame (columns of :mod:`diffprobe.records.schema`) and returns a new
object; nothing here modifies its input, prints or plots.
"""

from __future__ import annotations

import pandas as pd

UNATTRIBUTED = "unattributed"


def with_bytes(ops: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``bytes`` (read + written, as executed) and ``bytes_unfused`` columns."""
    out = ops.copy()
    out["bytes"] = out["bytes_read"] + out["bytes_written"]
    out["bytes_unfused"] = out["bytes_read_unfused"] + out["bytes_written_unfused"]
    return out


def totals(ops: pd.DataFrame, keys: list[str], value: str) -> pd.Series:
    """Sum of ``value`` grouped by ``keys`` (rows with zero everywhere kept; order by first appearance)."""
    return ops.groupby(keys, sort=False)[value].sum()


def _plain(x):
    return x.item() if hasattr(x, "item") else x


def account(ops: pd.DataFrame, value: str) -> dict:
    """The JSON account of one quantity: ``total``, ``by_stage``, ``by_layer_type``, ``by_stage_layer_type``
    (stage -> layer type -> value), ``by_level`` (UNet levels) and ``by_step`` (denoising steps)."""
    if ops.empty:
        return {"total": 0, "by_stage": {}, "by_layer_type": {}, "by_stage_layer_type": {}, "by_level": {},
                "by_step": {}}
    nested: dict[str, dict] = {}
    for (stage, lt), v in totals(ops, ["stage", "layer_type"], value).items():
        nested.setdefault(stage, {})[lt] = _plain(v)
    unet = ops[ops["stage"] == "denoiser"]
    steps = ops[ops["step"] >= 0]
    return {
        "total": _plain(ops[value].sum()),
        "by_stage": {k: _plain(v) for k, v in totals(ops, ["stage"], value).items()},
        "by_layer_type": {k: _plain(v) for k, v in totals(ops, ["layer_type"], value).items()},
        "by_stage_layer_type": nested,
        "by_level": {k: _plain(v) for k, v in totals(unet[unet["level"] != ""], ["level"], value).items()},
        "by_step": {str(k): _plain(v) for k, v in totals(steps, ["step"], value).items()},
    }


def level_table(ops: pd.DataFrame) -> pd.DataFrame:
    """UNet levels with their token count, FLOPs and self/cross-attention FLOPs."""
    unet = ops[(ops["stage"] == "denoiser") & (ops["level"] != "")]
    table = unet.groupby(["level", "tokens"], sort=False).agg(flops=("flops", "sum")).reset_index()
    for kind in ("self", "cross"):
        part = unet[unet["attn_kind"] == kind].groupby("level", sort=False)["flops"].sum()
        table[f"attn_{kind}_flops"] = table["level"].map(part).fillna(0).astype("int64")
    return table


def macs_conv_linear(ops: pd.DataFrame) -> dict:
    """Stage -> multiply-adds of nn.Conv / nn.Linear layers only: the convention of published MAC tables."""
    return {k: _plain(v) for k, v in totals(ops, ["stage"], "macs_conv_linear").items()}


def seconds_account(ops: pd.DataFrame, stage_seconds: dict[str, float]) -> dict:
    """The time account of a measured run. Op times are summed like FLOPs; for every stage timed as a whole,
    the part no op accounts for (Python between ops, hooks, allocator) is shown as ``unattributed``.

    Where a stage's op times sum to more than its time (they came from another, slower run: a compiled run's kernels
    are timed in a profiled run, its stages in an untraced one), nothing is subtracted into negative seconds: the
    stage's op times are scaled to its time, ``unattributed`` is 0 and ``op_time_ratio[stage]`` says by how much
    (op times / stage time, > 1)."""
    acc = account(ops, "time_s")
    ratios = {}
    for stage, secs in stage_seconds.items():
        if stage not in acc["by_stage"]:
            continue
        ops_s = acc["by_stage"][stage]
        if ops_s > secs > 0:
            ratios[stage] = ops_s / secs
            by_type = acc["by_stage_layer_type"][stage]
            for lt in by_type:
                by_type[lt] /= ratios[stage]
        acc["by_stage_layer_type"][stage][UNATTRIBUTED] = max(0.0, secs - ops_s)
        acc["by_stage"][stage] = secs
    if ratios:  # the layer types' totals over stages, of the scaled times; levels and steps by the denoiser's
        acc["by_layer_type"] = {lt: sum(d.get(lt, 0.0) for d in acc["by_stage_layer_type"].values())
                                for lt in acc["by_layer_type"]}
        r = ratios.get("denoiser", 1.0)
        acc["by_level"] = {k: v / r for k, v in acc["by_level"].items()}
        acc["by_step"] = {k: v / r for k, v in acc["by_step"].items()}
        acc["op_time_ratio"] = ratios
    acc["by_layer_type"][UNATTRIBUTED] = sum(
        d.get(UNATTRIBUTED, 0.0) for d in acc["by_stage_layer_type"].values())
    acc["total"] = sum(acc["by_stage"].values())
    return acc


LAYER_KEYS = ["stage", "step", "level", "tokens", "module", "layer_type", "attn_kind"]


def layer_table(ops: pd.DataFrame) -> pd.DataFrame:
    """One row per (stage, step, module, layer type, attention kind): op count, summed FLOPs, multiply-adds,
    bytes and time (``layers.parquet``); time is NaN where no op of the row was timed (analytic runs)."""
    layers = ops.groupby(LAYER_KEYS, sort=False, dropna=False).agg(
        ops=("index", "count"), flops=("flops", "sum"), macs_conv_linear=("macs_conv_linear", "sum"),
        bytes_read=("bytes_read", "sum"), bytes_written=("bytes_written", "sum"), time_s=("time_s", "sum"),
        timed=("time_s", "count")).reset_index()
    layers["time_s"] = layers["time_s"].where(layers.pop("timed") > 0)
    return layers
