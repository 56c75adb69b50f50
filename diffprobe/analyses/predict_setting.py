"""A setting's denoiser seconds predicted by the calibrated model (``profile --approx ... --hardware PRESET``): what
the setting runs priced as dense runs are (:func:`~diffprobe.analyses.predict.predict_seconds`), with the attention
calls it changed re-priced.

Step-level reuse changes which records run: the setting's records (those of what ran, its method's own operators
among them) are priced as they are. The ``block`` method changes how an attention call runs: its score / softmax /
P·V records' dense price is replaced by the block-sparse kernel's at the call's kept density (the ``block_sparse``
curve) plus the call's index, its predictor and the kernel's layout (the ``block_index`` curve, by the predictor's
FLOPs; a call that reused an index predicted at an earlier step pays none) plus the copies its kernel path makes
that dense SDPA does not (by the ``copy`` memory curve). A call the method left dense (fewer
keys than two blocks) keeps its SDPA price; one whose mask kept every block ran dense SDPA on a CPU and pays its
index too. The oracle methods (``threshold``, ``topk``, ``predicted``) run as a masked dense reference, chunk by
chunk: no kernel a calibration measures, so they are not priced, and said so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffprobe.analyses.predict import (
    attention_seconds,
    copy_seconds,
    grid_rate,
    overhead_per_record,
    predict_seconds,
)
from diffprobe.analyses.savings import call_keys
from diffprobe.records.schema import DENOISER

KERNELS = ("cpp", "flex", "gather")  # the block-sparse kernel's backends (a call's ``kernel``, 3D tiles suffixed)


def _denoiser_s(pred: pd.DataFrame) -> float:
    return float(pred.loc[pred["stage"] == DENOISER, "predicted_s"].sum())


def setting_seconds(ops: pd.DataFrame, dense_ops: pd.DataFrame, calls: list[dict] | None, preset) -> dict:
    """The setting's denoiser seconds (``denoiser_s``) and the dense run's over the same evaluations
    (``dense_denoiser_s``), as the calibrated model predicts them; with attention ``calls`` (an approximate core's),
    ``attention``: the dense price of the calls it re-priced, the kernel's, the index's and the copies' the kernel
    path makes that dense SDPA does not (Q, K, V made contiguous fp32 for the C++ kernel, the output in the head-major
    order the model's reshape then copies; the 3D tiles' reorderings), and the counts; ``notes``:
    what is not priced. ``ops``: the records of what the setting ran (``dense_ops`` where it changed no record)."""
    pred = predict_seconds(ops, preset)
    dense = pred if dense_ops is ops else predict_seconds(dense_ops, preset)
    out = {"denoiser_s": _denoiser_s(pred), "dense_denoiser_s": _denoiser_s(dense), "notes": []}
    if calls:
        attention = _calls(pred, calls, preset.calibration, out["notes"])
        out["denoiser_s"] += (attention["kernel_s"] + attention["index_s"] + attention["copies_s"]
                              - attention["dense_s"])
        out["attention"] = attention
    return out


def _calls(pred: pd.DataFrame, calls: list[dict], cal: dict, notes: list[str]) -> dict:
    """The re-priced calls: ``dense_s`` (their records' dense price, without the cost between operators, which
    stays), ``kernel_s`` (the block-sparse kernel's), ``index_s`` (the predictors' and layouts')."""
    keys, core, by_key = call_keys(pred, calls)
    op_s = pred["predicted_s"].to_numpy(float) - overhead_per_record(pred, cal)
    dense_of: dict[tuple, float] = {}
    for key, is_core, s in zip(keys, core, op_s, strict=True):
        if is_core:
            dense_of[key] = dense_of.get(key, 0.0) + float(s)
    priced = {"dense_s": 0.0, "kernel_s": 0.0, "index_s": 0.0, "copies_s": 0.0, "copies": 0, "calls": len(by_key),
              "kernel_calls": 0, "dense_calls": 0, "index_calls": 0, "unpriced_calls": 0}
    sparse, index, why = [], [], {"masked": 0, "no curve": 0, "no records": 0}
    for key, c in by_key.items():
        kernel = str(c["kernel"])
        reason = ("masked" if kernel == "masked-dense" else "no records" if key not in dense_of else
                  "no curve" if kernel.split(" ")[0] in KERNELS and "block_sparse" not in cal else None)
        if reason:
            why[reason] += 1
            continue
        if kernel.split(" ")[0] in KERNELS:
            sparse.append((key, c))
        else:
            priced["dense_calls"] += 1
        if c["predictor_flops"]:
            index.append(c)
    for key, c in sparse:
        priced["dense_s"] += dense_of[key]
        priced["copies_s"] += copy_seconds(cal, c.get("copies") or [])  # the kernel's layout copies
        priced["copies"] += len(c.get("copies") or [])
        priced["kernel_s"] += attention_seconds(cal, c["q_tokens"], c["k_tokens"], c["head_dim"], c["heads"],
                                                c["kept"] / c["entries"])
    priced["kernel_calls"] = len(sparse)
    if index and "block_index" in cal:
        points = np.array([[c["q_tokens"], c["head_dim"], c["heads"]] for c in index], dtype=float)
        rates = grid_rate(cal["block_index"], ["tokens", "d", "heads"], points)
        priced["index_s"] = float(sum(c["predictor_flops"] / r for c, r in zip(index, rates, strict=True)))
        priced["index_calls"] = len(index)
    priced["unpriced_calls"] = sum(why.values())
    _notes(priced, why, list(by_key.values()), cal, bool(index), notes)
    return priced


def _notes(priced: dict, why: dict, calls: list[dict], cal: dict, predicted: bool, notes: list[str]) -> None:
    """What the prediction leaves out (``why``: the calls not re-priced, by reason) or prices with another kernel's
    curve."""
    kernels = {str(c["kernel"]) for c in calls}
    of = f"of {priced['calls']} attention calls"
    for reason, text in (("masked", "ran the method as a masked dense reference (no kernel a calibration measures): "
                                    "priced as dense SDPA"),
                         ("no curve", "not re-priced (no block-sparse kernel curve in the calibration: re-run "
                                      "`diffprobe hardware calibrate`)"),
                         ("no records", "not priced: no traced records of theirs")):
        if why[reason]:
            notes.append(f"{why[reason]} {of} {text}")
    if predicted and "block_index" not in cal:
        notes.append("the calls' block index (predictor and layout) not priced: the calibration has no block_index "
                     "curve (re-run `diffprobe hardware calibrate`)")
    curve = (cal.get("block_sparse") or {}).get("backend")
    ran = sorted({k.split(" ")[0] for k in kernels} & set(KERNELS) - {curve})
    if curve and ran:
        notes.append(f"the kernel curve is the {curve} kernel's; calls here ran {', '.join(ran)}")
    if any("copies" not in c for c in calls if str(c["kernel"]).split(" ")[0] in KERNELS):
        notes.append("the kernel's copies of Q, K, V and its output not priced: calls recorded before they were")
