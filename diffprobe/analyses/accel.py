"""Every op record of a run on an accelerator design (:mod:`diffprobe.hardware.accel`): table in, table out.

Each record becomes GEMMs on the array or work on the vector unit:

* a convolution is its im2col GEMM (M = batch x output pixels, K = input channels per group x kernel area,
  N = output channels per group, one GEMM per group); a linear layer / ``mm`` / ``addmm`` / ``bmm`` / ``baddbmm`` /
  ``matmul`` its GEMM(s);
* a fused attention call's parts: scores = batch x heads GEMMs (queries x head dim x keys), P·V = batch x heads GEMMs
  (queries x keys x value dim), softmax on the vector unit;
* everything else (norms, activations, elementwise, copies) on the vector unit, its FLOPs as operations and its
  bytes streamed from DRAM; views cost nothing.

Self-attention on a design that skips (``granularity`` block / row / element) follows a :class:`Plan`: the kept
key blocks or keys per query block or row, or a uniform density (labelled as such). Cross-attention and other
short-key calls, the text encoders and the VAE stay dense (see :func:`skips`). What each design does with a plan:

* **block** (weight-stationary): for each stationary key (value) tile the unit streams only the query blocks that
  keep that key block, so the score and P·V GEMMs keep the dense folds with their streamed rows cut to the kept
  share; softmax runs on kept blocks only; the predictor (block mean-pooling of Q and K, a pooled score GEMM,
  block softmax and selection) is charged in full;
* **row**: scores and softmax stay dense (they decide what is skipped); each query row multiplies its own kept
  keys, a 1-row GEMM with its own stationary values;
* **element**: scores and softmax dense; P·V over kept entries only at the unit's ``element_efficiency``, plus
  an index per kept entry.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

from diffprobe.errors import DiffprobeError
from diffprobe.hardware.accel import AccelPreset, Cost, gemm, total, vector

GEMM_OPS = ("aten.linear.default", "aten.mm.default", "aten.addmm.default", "aten.bmm.default",
            "aten.baddbmm.default", "aten.matmul.default")
CONV_OPS = ("aten.conv2d.default", "aten.convolution.default", "aten._convolution.default", "aten.conv1d.default")


class Plan(NamedTuple):
    """What a skipping design keeps in one self-attention call: the kept share of the score matrix at the design's
    granularity and (row / element designs) the kept keys summed over query rows, per batch x head. From measured
    masks, ``masked`` holds the block design's fold-by-fold count (:func:`masked_block_attention`) and ``key``
    names the masks (so equal plans cost once)."""

    kept_fraction: float  # kept share of the score matrix at the design's granularity
    kept_keys_total: float = 0.0  # row / element: sum over query rows of kept keys, per (batch x head)
    key: str = "uniform"
    masked: dict | None = None  # block design with masks: score/pv cycles and MACs over all batch x heads


def uniform_plan(p: AccelPreset, nq: int, nk: int, density: float) -> Plan:
    """The plan of a uniform kept ``density`` (``--density``): every query block keeps the same share of key
    blocks (at least one), every row the same share of keys (at least one)."""
    if p.granularity == "block":
        nkb = math.ceil(nk / p.block)
        kept = min(nkb, max(1, round(density * nkb)))
        return Plan(kept / nkb)
    kept = min(nk, max(1, round(density * nk)))
    return Plan(kept / nk, kept_keys_total=kept * nq)


def _dims(shapes) -> list[list[int]]:
    return [[int(x) for x in s] for s in (shapes if shapes is not None else [])]


def _gemm_of(op: str, ins: list[list[int]], outs: list[list[int]], p: AccelPreset) -> Cost | None:
    if not ins or not outs:
        return None
    out = outs[0]
    if op == "aten.linear.default":
        a, w = ins[0], ins[1]
        return gemm(math.prod(a[:-1]), a[-1], w[0], p)
    if op == "aten.mm.default":
        return gemm(ins[0][0], ins[0][1], ins[1][1], p)
    if op == "aten.addmm.default":
        return gemm(ins[1][0], ins[1][1], ins[2][1], p)
    if op in ("aten.bmm.default", "aten.baddbmm.default"):
        a, b = ins[-2], ins[-1]
        return gemm(a[1], a[2], b[2], p, count=a[0])
    if op == "aten.matmul.default" and len(out) >= 2 and len(ins[0]) >= 2:
        return gemm(out[-2], ins[0][-1], out[-1], p, count=math.prod(out[:-2]))
    return None


def _conv(ins: list[list[int]], outs: list[list[int]], p: AccelPreset) -> Cost | None:
    if len(ins) < 2 or not outs or len(ins[0]) != 4 or len(ins[1]) != 4:
        return None
    (b, c, h, w), (co, cig, kh, kw), (_, _, ho, wo) = ins[0], ins[1], outs[0]
    groups = max(1, c // cig)
    return gemm(b * ho * wo, cig * kh * kw, co // groups, p, count=groups, ifmap_unique=b * cig * h * w)


def attention(part: str, ins: list[list[int]], outs: list[list[int]], flops: int, p: AccelPreset,
              plan: Plan | None) -> Cost:
    """One part (score / softmax / pv) of an attention call; ``plan`` None: dense."""
    if part == "softmax":
        return vector(flops if plan is None else round(flops * (plan.kept_fraction if p.granularity == "block"
                                                                else 1.0)), 0, p)
    if part == "score":
        (b, h, nq, d), (_, _, nk, _) = ins[0], ins[1]
        if plan is None or p.granularity in ("row", "element"):  # row / element: scores decide, so stay dense
            return gemm(nq, d, nk, p, count=b * h)
        nqb, nkb = math.ceil(nq / p.block), math.ceil(nk / p.block)
        if plan.masked is not None:  # measured masks: the fold-by-fold count
            main = _masked(gemm(nq, d, nk, p, count=b * h), plan.masked["score_macs"],
                           plan.masked["score_cycles"], plan.kept_fraction)
        else:  # for each stationary key tile the unit streams only the query blocks that keep it: the dense
            # GEMM's folds, with the streamed rows cut to the kept share
            main = gemm(max(1, round(nq * plan.kept_fraction)), d, nk, p, count=b * h)
        # the predictor: mean-pool Q and K per block (vector), pooled scores (array), block softmax and selection
        pred = total([vector((nq + nk) * d * b * h, (nq + nk) * d * b * h * p.bytes_per_element, p),
                      gemm(nqb, d, nkb, p, count=b * h),
                      vector(nqb * nkb * b * h * (5 + max(1, math.ceil(math.log2(nkb)))), 0, p)])
        return total([main, pred])
    # pv
    (b, h, nk, dv), (_, _, nq, _) = ins[0], outs[0]
    if plan is None:
        return gemm(nq, nk, dv, p, count=b * h)
    if p.granularity == "block":  # as the scores: per stationary value tile, only the query blocks that keep it
        if plan.masked is not None:
            return _masked(gemm(nq, nk, dv, p, count=b * h), plan.masked["pv_macs"], plan.masked["pv_cycles"],
                           plan.kept_fraction)
        return gemm(max(1, round(nq * plan.kept_fraction)), nk, dv, p, count=b * h)
    per_row = plan.kept_keys_total / nq
    if p.granularity == "row":  # each query row is its own 1-row GEMM over its kept keys
        return gemm(1, max(1, round(per_row)), dv, p, count=b * h * nq)
    kept = plan.kept_keys_total * b * h  # element: kept entries only, at the unit's efficiency, with indices
    dense = gemm(nq, nk, dv, p, count=b * h)
    frac = kept / (nq * nk * b * h)
    return Cost(macs=round(kept * dv), compute_cycles=dense.compute_cycles * frac / p.element_efficiency,
                memory_cycles=dense.memory_cycles, array_cycles=dense.array_cycles * frac / p.element_efficiency,
                cycles=max(dense.compute_cycles * frac / p.element_efficiency, dense.memory_cycles),
                sram_bytes=dense.sram_bytes * frac + kept * p.index_bytes, dram_bytes=dense.dram_bytes,
                energy_mac_j=dense.energy_mac_j * frac, energy_sram_j=(dense.sram_bytes * frac + kept * p.index_bytes)
                * p.energy_sram_byte_j, energy_dram_j=dense.energy_dram_j)


def _masked(dense: Cost, macs: int, cycles: int, frac: float) -> Cost:
    """A block-masked GEMM: its counted MACs and compute cycles; traffic and memory time the dense GEMM's scaled
    by the kept share (the kept tiles' operands and outputs)."""
    mem = dense.memory_cycles * frac
    sram, dram = dense.sram_bytes * frac, dense.dram_bytes * frac
    scale = macs / dense.macs if dense.macs else 0.0
    return Cost(macs=macs, compute_cycles=cycles, memory_cycles=mem, cycles=max(cycles, mem), array_cycles=cycles,
                sram_bytes=sram, dram_bytes=dram, energy_mac_j=dense.energy_mac_j * scale,
                energy_sram_j=dense.energy_sram_j * frac, energy_dram_j=dense.energy_dram_j * frac)


def skips(p: AccelPreset, stage: str, attn_kind: str, nk: int) -> bool:
    """Whether design ``p`` skips in this attention call: the denoiser's self- and joint attention only
    (cross-attention over text tokens, the text encoders and the VAE stay dense), over at least two key blocks
    (block design) or 128 keys (row / element)."""
    if p.granularity == "none" or attn_kind not in ("self", "joint") or stage != "denoiser":
        return False
    return nk >= (2 * p.block if p.granularity == "block" else 128)


def mask_plans(store, p: AccelPreset, tau: float):
    """Plans from a :class:`~diffprobe.records.masks.MaskStore` at mass ``tau``: ``(record, nq, nk) -> Plan``.
    A call the store lacks, or whose token counts differ from the masks', is refused with one line."""
    cache: dict = {}

    def plan(r, nq: int, nk: int) -> Plan:
        layer = r.module.split(".", 1)[1] if "." in r.module else r.module
        entry = store.find(layer, int(r.step))
        if entry is None:
            raise DiffprobeError(f"the mask store {store.path} has no masks for {layer}: give the masks of a "
                                 "sparsity run of the same model")
        if (entry["q_tokens"], entry["k_tokens"]) != (nq, nk):
            raise DiffprobeError(f"the masks of {layer} are for {entry['q_tokens']} x {entry['k_tokens']} tokens; this "
                                 f"run's call has {nq} x {nk}: use the masks of a sparsity run at the run's resolution")
        key = (entry["id"], p.granularity, p.block)
        if key not in cache:
            if p.granularity == "block":
                m = store.block_mask(entry, p.block, tau)
                flat = list(m.reshape(-1, *m.shape[2:]))
                q_shape = _dims(r.input_shapes)[0]
                masked = masked_block_attention(flat, nq, nk, q_shape[3], q_shape[3], p) if p.dataflow == "ws" \
                    else None
                if masked is not None:  # the masks' batch x heads may differ from the call's (another batch)
                    scale = q_shape[0] * q_shape[1] / len(flat)
                    masked = {k: v * scale for k, v in masked.items() if k != "kept_fraction"}
                frac = float(m.mean())
                cache[key] = Plan(frac, key=f"masks:{entry['id']}:{p.block}", masked=masked)
            else:
                rows = store.row_keys(entry, tau)
                total_keys = float(rows.reshape(-1, rows.shape[-1]).sum(axis=1).mean())
                cache[key] = Plan(total_keys / (nq * nk), kept_keys_total=total_keys, key=f"masks:{entry['id']}")
        return cache[key]

    return plan


def record_cost(r, p: AccelPreset, plan: Plan | None = None) -> Cost:
    """One record on design ``p`` (a row of ops.parquet, as a namedtuple)."""
    if r.layer_type == "view":
        return Cost()
    ins, outs = _dims(r.input_shapes), _dims(r.output_shapes)
    if r.op == "sdpa":
        return attention(r.part, ins, outs, int(r.flops), p, plan)
    if r.op in CONV_OPS:
        c = _conv(ins, outs, p)
        if c is not None:
            return c
    if r.op in GEMM_OPS:
        c = _gemm_of(r.op, ins, outs, p)
        if c is not None:
            return c
    return vector(int(r.flops), int(r.bytes_read + r.bytes_written), p)


def evaluate(ops: pd.DataFrame, p: AccelPreset, density: float | None = None, plans=None) -> pd.DataFrame:
    """Every record's cost on ``p``: the record's attribution columns and the :class:`Cost` fields, plus
    ``latency_s`` and ``energy_j``. Self-attention is skipped per ``plans`` (a callable ``(record, nq, nk) ->
    Plan | None`` from measured masks) or a uniform ``density``; with neither, or on a dense design, it is
    dense."""
    if density is not None and not (0 < density <= 1):
        raise DiffprobeError(f"--density must be in (0, 1], got {density}")
    rows = []
    shape: tuple[int, int] | None = None
    call_plan: Plan | None = None
    memo: dict = {}  # the steps of a run repeat the same records: cost each distinct one once
    for r in ops.itertuples(index=False):
        plan = None
        if r.op == "sdpa":
            if r.part == "score" or shape is None:  # a call's parts follow its score record: plan it there
                ins = _dims(r.input_shapes)
                shape = (ins[0][2], ins[1][2]) if len(ins) >= 2 else shape
                call_plan = None
                if shape and skips(p, r.stage, r.attn_kind, shape[1]):
                    if plans is not None:
                        call_plan = plans(r, *shape)
                    elif density is not None:
                        call_plan = uniform_plan(p, shape[0], shape[1], density)
            plan = call_plan
        key = (r.op, r.part, r.layer_type, repr(r.input_shapes), repr(r.output_shapes), r.flops, r.bytes_read,
               r.bytes_written, None if plan is None else plan[:3])
        c = memo.get(key)
        if c is None:
            c = memo[key] = record_cost(r, p, plan)
        rows.append((r.index, r.stage, r.step, r.level, r.layer_type, r.attn_kind, plan is not None, *c))
    cols = ["index", "stage", "step", "level", "layer_type", "attn_kind", "skipped", *Cost._fields]
    out = pd.DataFrame(rows, columns=cols)
    out["latency_s"] = out["cycles"] / p.clock_hz
    out["energy_j"] = out[["energy_mac_j", "energy_vector_j", "energy_sram_j", "energy_dram_j"]].sum(axis=1)
    return out


def _group(frame: pd.DataFrame, key: str, p: AccelPreset) -> dict:
    g = frame.groupby(key, sort=False)[["cycles", "latency_s", "energy_j", "macs", "array_cycles", "sram_bytes",
                                        "dram_bytes"]].sum()
    return {str(k): _summary_row(v, p) for k, v in g.iterrows() if k != ""}


def _summary_row(v, p: AccelPreset) -> dict:
    util = v["macs"] / (v["array_cycles"] * p.rows * p.cols) if v["array_cycles"] else None
    return {"cycles": float(v["cycles"]), "latency_s": float(v["latency_s"]), "energy_j": float(v["energy_j"]),
            "utilization": util, "sram_bytes": float(v["sram_bytes"]), "dram_bytes": float(v["dram_bytes"])}


def summary(costs: pd.DataFrame, p: AccelPreset) -> dict:
    """A design's account of one run: totals, by stage, by layer type, by level, and the energy by component."""
    tot = costs[["cycles", "latency_s", "energy_j", "macs", "array_cycles", "sram_bytes", "dram_bytes"]].sum()
    return {"preset": p.name, "title": p.title, "granularity": p.granularity, **_summary_row(tot, p),
            "energy_by_component": {k[len("energy_"):-2]: float(costs[k].sum())
                                    for k in ("energy_mac_j", "energy_vector_j", "energy_sram_j", "energy_dram_j")},
            "by_stage": _group(costs, "stage", p), "by_layer_type": _group(costs, "layer_type", p),
            "by_level": _group(costs[costs["stage"] == "denoiser"], "level", p),
            "skipped_calls": int(costs.loc[costs["skipped"], "index"].count())}


def masked_block_attention(masks, nq: int, nk: int, d: int, dv: int, p: AccelPreset) -> dict:
    """Score and P·V cycles of one attention call on a block-skipping weight-stationary design, fold by fold from
    its block masks (one bool array ``(ceil(nq/b), ceil(nk/b))`` per batch x head): a fold whose stationary keys
    (values) no query block keeps is skipped; any other streams the rows of the query blocks that keep a key block
    it holds. Returns the cycles and MACs of each part and the kept block fraction."""
    import numpy as np

    if p.dataflow != "ws" or p.granularity != "block":
        raise DiffprobeError("masked block attention is modelled for a weight-stationary block-skipping design")
    b, rows, cols = p.block, p.rows, p.cols
    out = {"score_cycles": 0, "pv_cycles": 0, "score_macs": 0, "pv_macs": 0}
    kept = blocks = 0
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        q_rows = np.minimum(b, nq - b * np.arange(mask.shape[0]))  # a ragged last block holds only real rows
        k_cols = np.minimum(b, nk - b * np.arange(mask.shape[1]))

        def streamed(lo: int, hi: int, mask=mask, q_rows=q_rows) -> int:  # rows of the query blocks keeping any
            return int(q_rows[mask[:, lo // b:(hi - 1) // b + 1].any(axis=1)].sum())  # key block in [lo, hi)

        for c0 in range(0, nk, cols):  # scores: Kᵀ stationary, keys across the array's columns
            t = streamed(c0, min(nk, c0 + cols))
            out["score_cycles"] += math.ceil(d / rows) * (t + 2 * rows + cols - 2) if t else 0
        for r0 in range(0, nk, rows):  # P·V: V stationary, keys down the array's rows
            t = streamed(r0, min(nk, r0 + rows))
            out["pv_cycles"] += math.ceil(dv / cols) * (t + 2 * rows + cols - 2) if t else 0
        pairs = int((q_rows[:, None] * k_cols[None, :])[mask].sum())  # kept (query, key) entries
        out["score_macs"] += pairs * d
        out["pv_macs"] += pairs * dv
        kept += int(mask.sum())
        blocks += mask.size
    out["kept_fraction"] = kept / blocks if blocks else 0.0
    return out


DENSITIES = (1.0, 0.5, 0.25, 0.1, 0.05)


def density_curve(ops: pd.DataFrame, p: AccelPreset, dense_latency_s: float,
                  densities: tuple[float, ...] = DENSITIES) -> list[dict]:
    """Speedup of design ``p`` over its dense counterpart at each uniform kept ``density`` of self-attention: only
    the attention records change with density, so only they are costed again."""
    attn = ops[ops["op"] == "sdpa"]
    dense_attn = float(evaluate(attn, p.dense())["latency_s"].sum())
    rest = dense_latency_s - dense_attn
    out = []
    for d in densities:
        lat = rest + float(evaluate(attn, p, d)["latency_s"].sum())
        out.append({"density": d, "latency_s": lat, "speedup": dense_latency_s / lat if lat else None})
    return out
