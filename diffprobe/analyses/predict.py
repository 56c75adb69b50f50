"""The calibrated performance model: each record's seconds predicted from its shape through the achieved-throughput
curves of a calibrated preset (:mod:`diffprobe.hardware.calibrate`), summed per layer type, stage and run.

Each record falls in one class by its operator: ``gemm`` (linear, mm, bmm, a convolution whose kernel is neither 1x1
nor 3x3, as the GEMM it is: M = output pixels, K = C_in x kernel area, N = C_out), ``conv`` (1x1 and 3x3 by output
pixels, C_in, C_out), ``sdpa`` (a fused attention call by query tokens, key tokens and head dim; its score, softmax
and P.V records share the call's time in proportion to their FLOPs, as the measured records do), the memory-bound
``softmax``, ``norm``, ``copy``, ``activation`` (silu, gelu, exp and their kind) and ``elementwise`` by the bytes
they move (a new output of ``fresh_pages_bytes`` or more by the ``memory_fresh`` curves: new pages, faulted in), and
``view`` (moves nothing: the dispatch cost alone). A compute class's time is its FLOPs over the rate interpolated
in the measured grid (log-linear in every axis); outside the grid the rate of the nearest edge is taken, bounded by
the roofline: never above the preset's peak, never faster than its bytes at the preset's bandwidth (each raised to
the highest rate the calibration measured, where a ceiling was measured below it). No op is
predicted faster than the cheapest op measured (its dispatch cost). Each record then carries its stage's fitted
``overhead_s``, the time a pipeline spends between its operators (Python, hooks; :mod:`diffprobe.run.calibration`);
a denoiser's records their component's (``denoiser_overhead_s``: a UNet's and a transformer's differ) where it was
fitted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffprobe.analyses.breakdown import with_bytes
from diffprobe.hardware.calibrate import highest_rates
from diffprobe.hardware.steadiness import STEADY

GEMM_OPS = ("linear", "aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm", "aten.matmul")
ACTIVATION_OPS = ("silu", "gelu", "sigmoid", "tanh", "exp", "log", "sin", "cos", "erf", "sqrt", "rsqrt", "pow",
                  "softplus", "mish", "elu")
COPY_OPS = ("aten.cat", "aten.contiguous", "aten.clone", "aten.copy_", "aten.to", "aten._to_copy", "aten.upsample",
            "aten.pad", "aten.constant_pad", "aten.index", "aten.stack")


def op_class(op: str, flops: int, nbytes: int) -> str:
    if op == "sdpa":
        return "sdpa"
    if op.startswith("aten.conv"):
        return "conv"
    if any(g in op for g in GEMM_OPS):
        return "gemm"
    if flops == 0 and nbytes == 0:
        return "view"
    if "softmax" in op:
        return "softmax"
    if "norm" in op:
        return "norm"
    if op.startswith(COPY_OPS):
        return "copy"
    name = op.split(".")[1] if op.count(".") >= 1 else op
    if name.strip("_") in ACTIVATION_OPS:  # silu, silu_ (in place), _softplus ...
        return "activation"
    return "elementwise"


def grid_rate(curve: dict, axes: list[str], points: np.ndarray) -> np.ndarray:
    """Rates at ``points`` (rows of axis values), log-linear in the grid, clamped to its edges."""
    from scipy.interpolate import RegularGridInterpolator

    grid = [np.log(np.asarray(curve[a], dtype=float)) for a in axes]
    rates = np.log(np.asarray(curve["flops_per_s"], dtype=float))
    q = np.log(np.clip(points.astype(float), 1e-12, None))  # positive (a density is below 1); clamped below
    for i, g in enumerate(grid):
        q[:, i] = np.clip(q[:, i], g[0], g[-1])
    return np.exp(RegularGridInterpolator(grid, rates, method="linear")(q))


def _gemm_dims(shapes: list, out_shapes: list) -> tuple[int, int, int]:
    """(M, N, K) of a linear or (b)mm record from its input and output shapes."""
    x, out = shapes[0], out_shapes[0] if out_shapes else shapes[0]
    k = x[-1] if x else 1
    n = out[-1] if out else 1
    m = int(np.prod(out[:-1])) if len(out) > 1 else 1
    return m, n, k


def _conv_dims(shapes: list, out_shapes: list) -> tuple[int, int, int, int]:
    """(output pixels incl. batch, C_in, C_out, kernel side) of a convolution record."""
    w = shapes[1] if len(shapes) > 1 else [1, 1, 1, 1]
    out = out_shapes[0] if out_shapes else [1, 1, 1, 1]
    pixels = int(np.prod([out[0], *out[2:]])) if len(out) > 2 else 1
    return pixels, int(w[1]) if len(w) > 1 else 1, int(w[0]), int(w[2]) if len(w) > 2 else 1


def _sdpa_dims(shapes: list) -> tuple[int, int, int, int]:
    """(batch x heads, query tokens, key tokens, head dim) of a fused attention call (its score record)."""
    q, k = shapes[0], shapes[1] if len(shapes) > 1 else shapes[0]
    return int(np.prod(q[:-2])) if len(q) > 2 else 1, q[-2], k[-2], q[-1]


def attention_seconds(cal: dict, q: int, kv: int, d: int, bh: int, density: float | None = None) -> float:
    """Seconds of one attention call over ``bh`` (batch x heads) heads: dense SDPA by the ``sdpa`` curve, or, given
    the kept ``density`` of key blocks, the block-sparse kernel by the ``block_sparse`` curve (kept FLOPs over its
    rate at (tokens, head dim, density), self-attention: ``q`` tokens); log-linear in the grids, their edges'
    rates outside."""
    if density is None:
        rate = grid_rate(cal["sdpa"], ["q", "kv", "d"], np.array([[q, kv, d]]))[0]
        return 4.0 * bh * q * kv * d / float(rate)
    rate = grid_rate(cal["block_sparse"], ["tokens", "d", "density"], np.array([[q, d, density]]))[0]
    return 4.0 * bh * q * kv * d * density / float(rate)


def copy_seconds(cal: dict, written: list[int]) -> float:
    """Seconds of copies each writing ``written`` bytes (moving twice that), as :func:`predict_seconds` prices a copy
    record."""
    out = np.asarray(written, dtype=float)
    return float(memory_seconds(cal, "copy", 2.0 * out, out).sum())


def memory_seconds(cal: dict, cls: str, moved, written) -> np.ndarray:
    """Seconds of ops of memory class ``cls`` each moving ``moved`` bytes and writing a new output of ``written``
    (0 for one written in place): an output of ``fresh_pages_bytes`` or more is new pages each call (on the CPU),
    priced by the ``memory_fresh`` curves, the rest by ``memory``; a class a calibration lacks (made before it) as
    ``elementwise``."""
    moved, written = np.asarray(moved, dtype=float), np.asarray(written, dtype=float)
    fresh = written >= (cal.get("meta") or {}).get("fresh_pages_bytes", np.inf)
    seconds = np.zeros(len(moved))
    for curves, m in ((cal["memory"], ~fresh), (cal.get("memory_fresh") or cal["memory"], fresh)):
        if m.any():
            seconds[m] = _memory_seconds(curves.get(cls, curves["elementwise"]), moved[m],
                                         fixed_below=curves is cal["memory"])
    return seconds


def _memory_seconds(curve: list, nbytes: np.ndarray, fixed_below: bool = True) -> np.ndarray:
    """Seconds to move ``nbytes`` in a memory class: log-linear in the measured (bytes, bytes/s) points, each time held
    to at most the time of every larger size; below the smallest, its time (the op's fixed cost; ``fixed_below``
    false: at its bandwidth, for the curves of fresh outputs, whose smallest size is large); above the largest, at the
    largest's bandwidth."""
    pts = np.asarray(curve, dtype=float)
    b = pts[:, 0]
    # moving fewer bytes never takes longer: a small size measured slow (a thread pool woken late on a busy machine)
    # is held to the time of the larger sizes
    t = np.minimum.accumulate((pts[:, 0] / pts[:, 1])[::-1])[::-1]
    x = np.clip(nbytes.astype(float), 1.0, None)
    inside = np.exp(np.interp(np.log(x), np.log(b), np.log(t)))
    below = t[0] if fixed_below else x * t[0] / b[0]
    return np.where(x < b[0], below, np.where(x > b[-1], x / pts[-1, 1], inside))


def predict_seconds(ops: pd.DataFrame, preset) -> pd.DataFrame:
    """A copy of ``ops`` with ``bytes``, ``op_class`` and ``predicted_s`` (the calibrated model's seconds)."""
    cal = preset.calibration
    out = with_bytes(ops)
    classes = np.array([op_class(o, f, b) for o, f, b in zip(out["op"], out["flops"], out["bytes"], strict=True)])
    out["op_class"] = classes
    pred = np.zeros(len(out))
    highest_flops, highest_moved = highest_rates(cal)  # a ceiling measured below the curves is none for them
    peak = np.maximum(out["dtype"].map(preset.peak_flops).fillna(preset.peak("float32")).to_numpy(float),
                      highest_flops)
    bandwidth = max(preset.memory_bandwidth, highest_moved)
    floor = float(np.asarray(cal["memory"]["elementwise"], dtype=float)[0, 0] /
                  np.asarray(cal["memory"]["elementwise"], dtype=float)[0, 1])
    flops = out["flops"].to_numpy(float)
    _compute(out, classes, cal, flops, pred)
    nbytes = out["bytes"].to_numpy(float)
    in_place = out["op"].str.split(".").str[1].fillna("").str.endswith("_").to_numpy()  # writes no new output
    written = np.where(in_place, 0.0, out["bytes_written"].to_numpy(float))
    for cls in ("softmax", "norm", "copy", "elementwise", "activation"):
        m = classes == cls
        if m.any():
            pred[m] = memory_seconds(cal, cls, nbytes[m], written[m])
    compute = np.isin(classes, ("gemm", "conv", "sdpa"))
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(pred > 0, flops / np.where(pred > 0, pred, 1), 0)
    over = compute & (rate > peak)  # never above the roofline
    pred[over] = flops[over] / peak[over]
    pred = np.maximum(pred, out["bytes"].to_numpy(float) / bandwidth)
    pred[classes == "view"] = cal["view_s"]
    pred[classes != "view"] = np.maximum(pred[classes != "view"], floor)
    _share_sdpa(out, classes, pred)
    out["predicted_s"] = pred + overhead_per_record(out, cal)
    return out


def overhead_per_record(ops: pd.DataFrame, cal: dict) -> np.ndarray:
    """Each record's share of the fitted cost between operators: its stage's ``overhead_s``; in the denoiser, its
    component's (``denoiser_overhead_s``: ``unet``, ``transformer``, by the record's module path) where fitted."""
    overhead = cal.get("overhead_s") or {}
    per = np.array(ops["stage"].map(overhead).fillna(overhead.get("denoiser", 0.0)), dtype=float)
    components = cal.get("denoiser_overhead_s") or {}
    if components:
        root = ops["module"].fillna("").astype(str).str.split(".", n=1).str[0]
        fitted = root.map(components)
        mask = (ops["stage"] == "denoiser").to_numpy() & fitted.notna().to_numpy()
        per[mask] = fitted.to_numpy(float)[mask]
    return per


def _compute(out: pd.DataFrame, classes: np.ndarray, cal: dict, flops: np.ndarray, pred: np.ndarray) -> None:
    """Seconds of the gemm, conv and sdpa records (sdpa: the whole call on its score record)."""
    shapes, outs = out["input_shapes"].tolist(), out["output_shapes"].tolist()
    gemm_idx, gemm_pts = [], []
    conv = {"k3": ([], []), "k1": ([], [])}
    for i in np.flatnonzero((classes == "gemm") | (classes == "conv")):
        if classes[i] == "conv":
            px, cin, cout, ks = _conv_dims(shapes[i], outs[i])
            if ks in (1, 3):
                conv[f"k{ks}"][0].append(i)
                conv[f"k{ks}"][1].append((px, cin, cout))
                continue
            gemm_idx.append(i)
            gemm_pts.append((px, cout, cin * ks * ks))
            continue
        gemm_idx.append(i)
        gemm_pts.append(_gemm_dims(shapes[i], outs[i]))
    if gemm_idx:
        idx = np.array(gemm_idx)
        pred[idx] = flops[idx] / grid_rate(cal["gemm"], ["m", "n", "k"], np.array(gemm_pts))
    for key, (idx, pts) in conv.items():
        if idx:
            idx = np.array(idx)
            pred[idx] = flops[idx] / grid_rate(cal["conv"][key], ["pixels", "cin", "cout"], np.array(pts))
    calls = np.flatnonzero((classes == "sdpa") & (out["part"].to_numpy() == "score"))
    if len(calls):
        dims = np.array([_sdpa_dims(shapes[i]) for i in calls])
        call_flops = 4.0 * dims[:, 0] * dims[:, 1] * dims[:, 2] * dims[:, 3]
        pred[calls] = call_flops / grid_rate(cal["sdpa"], ["q", "kv", "d"], dims[:, 1:])


def _share_sdpa(out: pd.DataFrame, classes: np.ndarray, pred: np.ndarray) -> None:
    """A fused call's seconds (on its score record) shared over its parts in proportion to their FLOPs."""
    m = classes == "sdpa"
    if not m.any():
        return
    score = out.loc[m, "part"].to_numpy() == "score"
    frame = pd.DataFrame({"call": np.cumsum(score), "flops": out.loc[m, "flops"].to_numpy(float),
                          "call_s": np.where(score, pred[m], 0.0)})  # a call: its score record and the parts after it
    total = frame.groupby("call")[["flops", "call_s"]].transform("sum")
    pred[m] = np.where(total["flops"] > 0, total["call_s"] * frame["flops"] / total["flops"], 0.0)


def _sum(frame: pd.DataFrame, key: str) -> dict:
    return {k: float(v) for k, v in frame.groupby(key, sort=False)["predicted_s"].sum().items()}


def speed_probe(meta: dict) -> str:
    """Which probe measures a calibration's speed level (:func:`machine_speed`): the light GEMM where its curves were
    scaled to one speed by it (``speed_flops_per_s``, the median of its hundreds of probes: the level the FLOP curves
    are at), else the reference GEMM and convolution (``reference_flops_per_s``, the median of five)."""
    return "light GEMM probe" if meta.get("speed_flops_per_s") else "reference GEMM and convolution"


def machine_speed(cal: dict, rates: list[float] | None) -> dict | None:
    """How fast the machine ran the calibration's :func:`speed_probe` around a measured run (``rates``: timed before
    and after it) against the calibration's level: ``ratio`` = their mean / ``speed_flops_per_s`` (or
    ``reference_flops_per_s``); past :data:`STEADY`, a ``note``: a shared machine that drifted between the calibration
    and the run can make the prediction miss, not the model (by how much, two probes at the run's ends do not say: on
    the Intel VM they tracked a round's denoiser with a correlation of 0.43, docs/prediction.md). None where either was
    not timed (a calibration older than its probes, an analytic run)."""
    meta = cal.get("meta", {})
    ref = meta.get("speed_flops_per_s") or meta.get("reference_flops_per_s")
    if not ref or not rates:
        return None
    ratio = sum(rates) / len(rates) / ref
    out = {"calibration_flops_per_s": ref, "run_flops_per_s": list(rates), "ratio": ratio, "probe": speed_probe(meta)}
    if abs(ratio - 1) > STEADY:
        out["note"] = (f"this machine ran the calibration's {out['probe']} at {ratio:.2f}x its speed when calibrated, "
                       "around this run: it has moved since, so a miss may be the machine's, not the model's (two "
                       "probes at the run's ends do not see its middle); calibrate again now to compare like with like")
    return out


def calibrated_summary(ops: pd.DataFrame, preset, seconds: dict | None) -> dict:
    """The calibrated prediction of one run: total, by stage, layer type, class and (per stage) level, and (measured
    runs) its error per stage and layer type against the measured seconds (``error`` = predicted / measured - 1)."""
    pred = predict_seconds(ops, preset)
    result = {"total_s": float(pred["predicted_s"].sum()), "by_stage": _sum(pred, "stage"),
              "by_layer_type": _sum(pred, "layer_type"), "by_class": _sum(pred, "op_class"),
              "by_stage_level": {s: _sum(g, "level") for s, g in pred.groupby("stage", sort=False)},
              "calibration": dict(preset.calibration["meta"])}
    if seconds:
        def row(p, m):
            return {"predicted_s": p, "measured_s": m, "error": (p / m - 1) if m else None}

        result["versus_measured"] = {
            "by_stage": {s: row(result["by_stage"].get(s, 0.0), m) for s, m in seconds.get("by_stage", {}).items()},
            "by_layer_type": {t: row(result["by_layer_type"].get(t, 0.0), m)
                              for t, m in seconds.get("by_layer_type", {}).items()},
            "total": row(result["total_s"], seconds.get("total", 0.0))}
    return result
