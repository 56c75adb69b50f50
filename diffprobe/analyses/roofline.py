"""Roofline over the record table: per-op arithmetic intensity, bound and roofline time on a hardware preset.

The roofline time of an op is ``max(flops / peak[dtype], bytes / bandwidth)`` with the op's *executed* traffic
(``bytes_read + bytes_written``: a fused attention kernel's scores never reach memory). It is a lower bound: a
perfect kernel for that op on that machine. Summed, it predicts a stage or a run; against a measured run it
shows how far each layer type is from its ceiling.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffprobe.analyses.breakdown import UNATTRIBUTED, with_bytes
from diffprobe.hardware.presets import HardwarePreset


def roofline(flops, nbytes, peak, bandwidth) -> dict:
    """The roofline of ops (scalars or arrays): intensity (FLOP/byte), attainable FLOP/s, time and bound.

    ``bound`` is ``compute`` where ``flops / peak >= bytes / bandwidth``, ``memory`` otherwise, and ``none`` for
    ops that neither compute nor move data (views)."""
    flops, nbytes, peak = (np.asarray(x, dtype=float) for x in (flops, nbytes, peak))
    compute_s, memory_s = flops / peak, nbytes / bandwidth
    with np.errstate(divide="ignore", invalid="ignore"):
        intensity = np.where(nbytes > 0, flops / nbytes, np.where(flops > 0, np.inf, 0.0))
    bound = np.where((flops == 0) & (nbytes == 0), "none", np.where(compute_s >= memory_s, "compute", "memory"))
    return {"intensity": intensity, "attainable_flops": np.minimum(peak, intensity * bandwidth),
            "roofline_s": np.maximum(compute_s, memory_s), "bound": bound}


def op_roofline(ops: pd.DataFrame, preset: HardwarePreset) -> pd.DataFrame:
    """A copy of ``ops`` with ``bytes``, ``intensity``, ``peak_flops``, ``roofline_s`` and ``bound`` columns.

    Each op uses the peak of its own dtype (non-float ops, e.g. int64 index math, the float32 peak)."""
    out = with_bytes(ops)
    peaks = out["dtype"].map(preset.peak_flops).fillna(preset.peak("float32")).astype(float)
    r = roofline(out["flops"], out["bytes"], peaks, preset.memory_bandwidth)
    out["peak_flops"] = peaks
    for key in ("intensity", "roofline_s", "bound"):
        out[key] = r[key]
    return out


def _sum(frame: pd.DataFrame, key: str, value: str) -> dict:
    return {k: float(v) for k, v in frame.groupby(key, sort=False)[value].sum().items()}


def prediction(roof: pd.DataFrame) -> dict:
    """Predicted seconds (roofline) in total, by stage, by layer type, and the share of compute-bound time."""
    busy = roof[roof["bound"] != "none"]
    total = float(busy["roofline_s"].sum())
    return {
        "total_s": total,
        "by_stage": _sum(busy, "stage", "roofline_s"),
        "by_layer_type": _sum(busy, "layer_type", "roofline_s"),
        "compute_bound_share": float(busy.loc[busy["bound"] == "compute", "roofline_s"].sum() / total)
        if total else 0.0,
    }


def versus_measured(roof: pd.DataFrame, seconds: dict, preset: HardwarePreset) -> dict:
    """Predicted vs measured per stage and per layer type, with achieved fraction of peak.

    ``seconds`` is the measured seconds account (``breakdown.seconds_account``): stage times from the stage
    timer, layer-type times from the per-op timer (on CUDA with the profiler timer, or a compiled run: kernel
    time). ``error`` is predicted / measured - 1 (negative: the hardware ran slower than its roofline, as it always
    does by some margin). Where the account has kernel-busy seconds per stage (``gpu_busy_s``), each stage also
    gets ``kernel_s`` and ``kernel_error`` (the roofline against the GPU's busy time, host gaps left out)."""
    pred = prediction(roof)
    flops_stage = _sum(roof, "stage", "flops")
    flops_type = _sum(roof, "layer_type", "flops")

    def row(pred_s, meas_s, flops):
        return {"predicted_s": pred_s, "measured_s": meas_s,
                "error": (pred_s / meas_s - 1) if meas_s else None,
                "achieved_flops": flops / meas_s if meas_s else None}

    stages = {s: row(pred["by_stage"].get(s, 0.0), m, flops_stage.get(s, 0.0))
              for s, m in seconds.get("by_stage", {}).items()}
    types = {t: row(pred["by_layer_type"].get(t, 0.0), m, flops_type.get(t, 0.0))
             for t, m in seconds.get("by_layer_type", {}).items() if t != UNATTRIBUTED}
    peak = preset.peak(_main_dtype(roof))
    for s, busy in (seconds.get("gpu_busy_s") or {}).items():  # CUDA, profiler timer: kernel-busy time per stage
        if s in stages:
            stages[s]["kernel_s"] = busy
            stages[s]["kernel_error"] = (stages[s]["predicted_s"] / busy - 1) if busy else None
    for r in (*stages.values(), *types.values()):
        r["fraction_of_peak"] = r["achieved_flops"] / peak if r["achieved_flops"] is not None else None
    return {"by_stage": stages, "by_layer_type": types, "peak_flops": peak,
            "total": row(pred["total_s"], seconds.get("total", 0.0), float(roof["flops"].sum()))}


def _main_dtype(roof: pd.DataFrame) -> str:
    """The dtype that carries most FLOPs (the run's compute dtype)."""
    if roof.empty:
        return "float32"
    return str(roof.groupby("dtype")["flops"].sum().idxmax())


def summary(ops: pd.DataFrame, preset: HardwarePreset, seconds: dict | None = None,
            device: str | None = None) -> dict:
    """The roofline JSON of one run: preset (its whole definition under ``preset_definition``, so a report
    never looks it up again), ridge point, prediction and (measured runs) the comparison. A run measured on
    another kind of device than the preset's (``device``, e.g. ``cpu`` against a GPU preset) gets a ``caveat``."""
    roof = op_roofline(ops, preset)
    dtype = _main_dtype(roof)
    result = {"preset": preset.name, "preset_title": preset.title, "preset_kind": preset.kind, "dtype": dtype,
              "peak_flops": preset.peak(dtype), "memory_bandwidth": preset.memory_bandwidth,
              "ridge_intensity": preset.ridge(dtype), "prediction": prediction(roof),
              "preset_definition": preset.to_dict()}
    if preset.calibration:  # the calibrated model beside the bound (diffprobe.analyses.predict)
        from diffprobe.analyses.predict import calibrated_summary
        from diffprobe.hardware.preset import calibration_mismatch

        result["calibrated"] = calibrated_summary(ops, preset, seconds)
        mismatch = calibration_mismatch(preset.calibration) if device else None
        same_kind = (device or "cpu").split(":")[0] == preset.calibration["meta"]["device"].split(":")[0]
        stopped = preset.calibration["meta"].get("interrupted")  # a calibration written after Ctrl-C
        caveats = [*([mismatch] if mismatch and same_kind else []),
                   *([f"the calibration was {stopped}"] if stopped else [])]
        if caveats:
            result["calibrated"]["caveat"] = "; ".join(caveats)
    else:
        result["calibrated"] = None
        result["calibrated_note"] = (f"{preset.name} has no calibration table: seconds are the roofline's bound, "
                                     "not a prediction (`diffprobe hardware calibrate` makes one for this machine)")
    if seconds:
        result["versus_measured"] = versus_measured(roof, seconds, preset)
        kind = "gpu" if (device or "").startswith("cuda") else "cpu" if device else None
        if kind is not None and kind != preset.kind:
            result["caveat"] = (f"measured on a {kind} against the {preset.kind} preset {preset.name}: errors and "
                                "fractions of peak say how far this machine is from that one, not how well "
                                "either is used")
    return result
