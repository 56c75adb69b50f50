"""What approximate attention saves: the per-call accounts of an approximate core (one dict per attention call:
dense and approximate FLOPs, entries kept) summed, and a traced run's dense record table re-weighted by them."""

from __future__ import annotations

from diffprobe.analyses import breakdown
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
        by_kind[kind] = {"dense_flops": d_k, "flops": a_k, "share_saved": 1 - a_k / d_k if d_k else 0.0}
    return {"dense_flops": dense, "flops": approx, "predictor_flops": sum(c["predictor_flops"] for c in calls),
            "kept_fraction": kept / entries if entries else 1.0, "share_saved": 1 - approx / dense if dense else 0.0,
            "by_kind": by_kind}


def _scaled_flops(ops, calls: list[dict] | None):
    """Each record's FLOPs with approximate attention: UNet score / softmax / P·V rows scaled by the kept fraction
    their call (module, step) had (``calls`` None: as traced), and the predictors' FLOPs."""
    if not calls:
        return ops["flops"].astype(float), 0.0
    keys, core, by_key = call_keys(ops, calls)
    kept = {k: c["kept"] / c["entries"] for k, c in by_key.items()}
    missing = {k for k, c in zip(keys, core, strict=True) if c} - set(kept)
    if missing:
        raise DiffprobeError(f"internal: no approximate call for {len(missing)} traced attention calls, "
                             f"e.g. {sorted(missing)[0]}")
    factor = [kept[k] if c else 1.0 for k, c in zip(keys, core, strict=True)]
    return ops["flops"].astype(float) * factor, float(sum(c["predictor_flops"] for c in calls))


ATTN_CORE = ("attn_score", "attn_softmax", "attn_pv")


def call_keys(ops, calls: list[dict]) -> tuple[list[tuple], object, dict[tuple, dict]]:
    """Which approximate call each record belongs to: every record's key (module, step, which call of the step:
    1 for CFG's unconditional branch where it is a call of its own), whether it is a denoiser attention score /
    softmax / P·V row, and each call by its key."""
    prefix = denoiser_prefix(ops)
    which = (ops["cfg"] == "uncond").astype(int)
    keys = list(zip(ops["module"], ops["step"], which, strict=True))
    core = (ops["layer_type"].isin(ATTN_CORE) & (ops["stage"] == "denoiser")).to_numpy()
    return keys, core, {(f"{prefix}.{layer}", step, call): c for c in calls for layer, step, call in [call_key(c)]}


def call_key(call: dict) -> tuple[str, int, int]:
    """An approximate call's (layer, step, which call of the step): what one run's calls each have once."""
    return call["layer"], call["step"], call.get("call", 0)


def denoiser_prefix(ops) -> str:
    """The denoiser's component name in the records' module paths (``unet`` or ``transformer``)."""
    den = ops.loc[ops["stage"] == "denoiser", "module"]
    return den.iloc[0].split(".", 1)[0] if len(den) else "unet"


def scaled_records(ops, calls: list[dict] | None):
    """The records a setting's account sums: ``ops`` with each denoiser attention score / softmax / P·V row's FLOPs
    scaled by its call's kept fraction (rounded to whole FLOPs; ``calls`` None: the records as they are)."""
    if not calls:
        return ops
    flops, _ = _scaled_flops(ops, calls)
    return ops.assign(flops=flops.round().astype("int64"))


def _conventions(ops, images: int) -> dict:
    """The literature's MACs (conv + linear) by stage, bytes in all, by stage and by layer type, and the denoiser's
    FLOPs and MACs per image per evaluation (CFG branches included where they run) of a set of records."""
    den = ops["stage"] == "denoiser"
    evals = int(ops.loc[den & (ops["step"] >= 0), "step"].nunique())
    macs = {k: float(v) for k, v in breakdown.macs_conv_linear(ops).items()}
    traffic = breakdown.account(breakdown.with_bytes(ops), "bytes")
    per = max(1, images * evals)
    return {"macs_conv_linear": macs, "bytes_total": float(traffic["total"]),
            "bytes_by_stage": {k: float(v) for k, v in traffic["by_stage"].items()},
            "bytes_by_layer_type": {k: float(v) for k, v in traffic["by_layer_type"].items()},
            "per_image_and_eval": {"flops": float(ops.loc[den, "flops"].sum()) / per,
                                   "macs_conv_linear": macs.get("denoiser", 0.0) / per, "evals": evals,
                                   "images": images}}


def approximate_account(ops, calls: list[dict] | None, dense=None, images: int = 1) -> dict:
    """The cost account of a run with approximate attention and/or step-level reuse, against dense.

    ``ops``: the records of what ran (the dense run's records, or those of a traced reuse run); ``calls``: each
    attention call's kept fraction (None: attention as traced); ``dense``: the dense run's records (default
    ``ops``). Every UNet attention score / softmax / P·V row is scaled by its call's kept fraction and the
    predictors' FLOPs are added as ``attn_predictor``. Returns FLOPs by layer type and stage, in total, and the
    attention and end-to-end savings against dense; and, for the setting and for dense alike (``dense_`` keys), the
    literature's MACs by stage (conv + linear multiply-adds, unchanged by attention methods, whose savings are in
    the attention products), bytes in all (the records as traced: attention rows' traffic is not re-weighted) and
    the denoiser's FLOPs and MACs per image (``images``: the run's) per evaluation (the predictors' FLOPs in the
    setting's)."""
    dense = ops if dense is None else dense
    flops, predictor = _scaled_flops(ops, calls)
    by_type = {k: float(v) for k, v in flops.groupby(ops["layer_type"], sort=False).sum().items()}
    by_stage = {k: float(v) for k, v in flops.groupby(ops["stage"], sort=False).sum().items()}
    if predictor:  # the method's own cost: in its stage and as a layer type of its own, so every figure is net
        by_type["attn_predictor"] = predictor
        by_stage["denoiser"] = by_stage.get("denoiser", 0.0) + predictor
    core = ops["layer_type"].isin(ATTN_CORE) & (ops["stage"] == "denoiser")
    dense_core = dense["layer_type"].isin(ATTN_CORE) & (dense["stage"] == "denoiser")
    dense_attn = float(dense.loc[dense_core, "flops"].sum())
    approx_attn = float(flops[core].sum()) + predictor
    total_dense = float(dense["flops"].sum())
    total = float(flops.sum()) + predictor
    dense_stage = dense.groupby("stage", sort=False)["flops"].sum()
    dense_type = dense.groupby("layer_type", sort=False)["flops"].sum()
    entries = sum(c["entries"] for c in calls) if calls else 0
    mine, theirs = _conventions(ops, images), _conventions(dense, images)
    # the setting's denoiser FLOPs as its account counts them: attention re-weighted, the predictors added
    mine["per_image_and_eval"]["flops"] = by_stage.get("denoiser", 0.0) / max(
        1, images * mine["per_image_and_eval"]["evals"])
    conventions = {**mine, **{f"dense_{k}": v for k, v in theirs.items()}}
    return {**conventions, "flops_by_layer_type": by_type, "flops_by_stage": by_stage, "flops_total": total,
            "dense_flops_by_layer_type": {k: float(v) for k, v in dense_type.items()}, "dense_flops_total": total_dense,
            "attention_flops_dense": dense_attn, "attention_flops": approx_attn,
            "denoiser_share_saved": (1 - by_stage.get("denoiser", 0.0) / float(dense_stage["denoiser"])
                                     if dense_stage.get("denoiser") else 0.0),
            "attention_share_saved": 1 - approx_attn / dense_attn if dense_attn else 0.0,
            "end_to_end_share_saved": end_to_end_saved(total, total_dense),
            "flops_saved_by_stage": {k: float(v) - by_stage.get(k, 0.0) for k, v in dense_stage.items()},
            "flops_saved_by_layer_type": {**{k: float(v) - by_type.get(k, 0.0) for k, v in dense_type.items()},
                                          **({"attn_predictor": -predictor} if predictor else {})},
            "kept_fraction": sum(c["kept"] for c in calls) / max(1, entries) if calls else 1.0}


def end_to_end_saved(flops: float, dense_flops: float) -> float:
    """The share of a whole run's FLOPs a setting saves: ``1 - flops / dense_flops``, both totals over the same
    stages, steps and prompts, the method's own cost in ``flops`` (0 where the dense run has no FLOPs)."""
    return 1 - flops / dense_flops if dense_flops else 0.0


def steps_ran(ops, dense=None) -> list[dict]:
    """Per denoising step of the denoiser: its FLOPs, the top-level blocks that executed any op (``blocks``) and,
    given the dense run's records, those of them that ran only in part (``partial``: fewer FLOPs than at that step
    of the dense run — a forecast or a cached branch computed in their place), with the layers of each that did run
    (``partial_ran``: ``resnets.0``, ``attentions.0``, ``attn1``, ...; ``attn (in part)`` where a layer itself ran
    fewer FLOPs than dense, e.g. a cached attention's own bookkeeping): a reuse method's plan as executed."""
    def per_block(frame):
        den = frame[(frame["stage"] == "denoiser") & (frame["step"] >= 0)]
        return den.groupby([den["step"], den["module"].map(_top_block)], sort=True)["flops"].sum()

    full = per_block(dense) if dense is not None else None
    den = ops[(ops["stage"] == "denoiser") & (ops["step"] >= 0)]
    out = []
    for step, blocks in per_block(ops).groupby(level=0, sort=True):
        names = [block for (_, block) in blocks.index if block]
        partial = [b for b in names if full is not None and blocks[(step, b)] < full.get((step, b), 0.0) * (1 - 1e-9)]
        ran = {}
        if partial:
            for b in partial:
                mine = _layer_flops(den, step, b)
                theirs = _layer_flops(dense[(dense["stage"] == "denoiser")], step, b) if dense is not None else {}
                ran[b] = [f"{c} (in part)" if v < theirs.get(c, 0.0) * (1 - 1e-9) else c for c, v in mine.items()]
        out.append({"step": int(step), "flops": float(blocks.sum()), "blocks": names, "partial": partial,
                    "partial_ran": ran})
    return out


def _layer_flops(den, step: int, block: str) -> dict[str, float]:
    """FLOPs of each layer of ``block`` (:func:`_layer_in`) at ``step``, in name order, the block's own ops aside."""
    rows = den[den["step"] == step]
    rows = rows[rows["module"].map(_top_block) == block]
    layers = rows["module"].map(lambda m: _layer_in(m, block))
    sums = rows["flops"].groupby(layers).sum()
    return {k: float(v) for k, v in sorted(sums.items()) if k}


def _layer_in(module: str, block: str) -> str:
    """The layer of ``block`` a module path sits in: ``unet.down_blocks.0.resnets.0.conv1`` in ``down_blocks.0`` ->
    ``resnets.0``; ``transformer.transformer_blocks.3.attn1.to_q`` in ``transformer_blocks.3`` -> ``attn1``; ``""``
    for the block's own ops."""
    rest = module.split(".")[1 + len(block.split(".")):]
    if not rest:
        return ""
    return ".".join(rest[:2]) if len(rest) > 1 and rest[1].isdigit() else rest[0]


def _top_block(module: str) -> str:
    """``unet.down_blocks.1.attentions.0...`` -> ``down_blocks.1``; ``unet.conv_in`` -> ``conv_in``."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    return ".".join(parts[:2]) if parts[0].endswith("_blocks") else parts[0]


def added_ops(dense, ops) -> dict:
    """Ops a method's run executed that the dense run did not (its own bookkeeping, e.g. DeepCache looking the
    timestep up): count, FLOPs and count by op, matched per (stage, step, module, op)."""
    key = ["stage", "step", "module", "op"]
    d = dense.groupby(key).agg(n=("flops", "size"), flops=("flops", "sum"))
    o = ops.groupby(key).agg(n=("flops", "size"), flops=("flops", "sum"))
    extra = o.join(d, rsuffix="_dense", how="left").fillna(0)
    extra = extra[extra["n"] > extra["n_dense"]]
    n = (extra["n"] - extra["n_dense"]).astype(int)
    return {"ops": int(n.sum()), "flops": float((extra["flops"] - extra["flops_dense"]).clip(lower=0).sum()),
            "by_op": {str(k): int(v) for k, v in n.groupby(level="op").sum().items()}}
