"""What approximate attention saves: the per-call accounts of an approximate core (one dict per attention call:
dense and approximate FLOPs, entries kept) summed, and a traced run's dense record table re-weighted by them."""

from __future__ import annotations

from diffprobe.errors import DiffprobeError


def account(calls: list[dict]) -> dict:
    """Totals of a run's attention calls: dense vs approximate FLOPs of the score/softmax/P·V parts."""
    dense = sum(c["dense_flops"] for c in calls)
    approx = sum(c["flops"] for c in calls)
    entries = sum(c["entries"] for c in calls)
    kept = sum(c["kept"] for c in calls)
    by_kind = {}
    for kind in ("self", "cross"):
        sel = [c for c in calls if c["attn_kind"] == kind]
        d_k, a_k = sum(c["dense_flops"] for c in sel), sum(c["flops"] for c in sel)
        by_kind[kind] = {"dense_flops": d_k, "flops": a_k, "saved": 1 - a_k / d_k if d_k else 0.0}
    return {"dense_flops": dense, "flops": approx, "predictor_flops": sum(c["predictor_flops"] for c in calls),
            "kept_fraction": kept / entries if entries else 1.0, "saved": 1 - approx / dense if dense else 0.0,
            "by_kind": by_kind}


def approximate_account(ops, calls: list[dict]) -> dict:
    """The cost account of the same run with approximate attention: every UNet attention score / softmax / P·V
    row of ``ops`` scaled by the kept fraction its call (module, step) had, plus the predictors' FLOPs as
    ``attn_predictor``. Returns FLOPs by layer type and in total, beside the dense ones."""
    kept = {(f"unet.{c['layer']}", c["step"]): c["kept"] / c["entries"] for c in calls}
    core = ops["layer_type"].isin(("attn_score", "attn_softmax", "attn_pv")) & (ops["stage"] == "unet")
    missing = {(m, s) for m, s in zip(ops.loc[core, "module"], ops.loc[core, "step"], strict=True)} - set(kept)
    if missing:
        raise DiffprobeError(f"internal: no approximate call for {len(missing)} traced attention calls, "
                             f"e.g. {sorted(missing)[0]}")
    factor = [kept[(m, s)] if c else 1.0 for m, s, c in zip(ops["module"], ops["step"], core, strict=True)]
    flops = ops["flops"].astype(float) * factor
    by_type = {k: float(v) for k, v in flops.groupby(ops["layer_type"], sort=False).sum().items()}
    predictor = float(sum(c["predictor_flops"] for c in calls))
    if predictor:
        by_type["attn_predictor"] = predictor
    dense_attn = float(ops.loc[core, "flops"].sum())
    approx_attn = float(flops[core].sum()) + predictor
    total_dense = float(ops["flops"].sum())
    return {"flops_by_layer_type": by_type, "flops_total": float(flops.sum()) + predictor,
            "attention_flops_dense": dense_attn, "attention_flops": approx_attn,
            "attention_flops_saved": 1 - approx_attn / dense_attn if dense_attn else 0.0,
            "end_to_end_flops_saved": (dense_attn - approx_attn) / total_dense if total_dense else 0.0,
            "kept_fraction": sum(c["kept"] for c in calls) / max(1, sum(c["entries"] for c in calls))}
