"""A sweep's findings from its finished points: each point reduced to what the sweep states (shares, totals, memory,
bottlenecks), then exponents and crossovers across points. No I/O: :mod:`diffprobe.run.sweep` reads the points."""

from __future__ import annotations

import math

from diffprobe.analyses import scaling


def point_summary(name: str, run: dict, ops, accel: dict | None = None) -> dict:
    """What a sweep keeps of one finished point: its ``run.json`` (``run``), records (``ops``) and, with ``sweep
    --accel``, its ``accel.json`` (``accel``), reduced to shares, totals, memory and bottlenecks."""
    h, w, b = run["height"], run["width"], run["batch"]
    timed = run.get("seconds") is not None
    point = {
        "name": name, "height": h, "width": w, "batch": b, "side": math.sqrt(h * w),
        "frames": run.get("frames"), "latent_frames": run.get("latent_frames"),
        "denoiser": run["denoiser_kind"], "family": run["family"],
        "tokens": int(ops.loc[ops["stage"] == "denoiser", "tokens"].max() or 0),  # image tokens at full size
        "flops": {"denoiser": scaling.class_totals(ops, "flops", "denoiser"),
                  "total": scaling.class_totals(ops, "flops")},
        "bytes": {"denoiser": scaling.class_totals(ops.assign(b=ops["bytes_read"] + ops["bytes_written"]), "b",
                                               "denoiser")},
        "by_stage_flops": run["flops"]["by_stage"],
        "attention_memory": scaling.attention_memory(ops),
        "peak_memory_bytes": run.get("peak_memory_bytes"),
        "bottlenecks": scaling.bottlenecks(ops[ops["stage"] == "denoiser"], "flops", 10),
    }
    if timed:
        point["seconds"] = {"denoiser": scaling.class_totals(ops, "time_s", "denoiser"), "stages": run["stages"]}
        point["bottlenecks_seconds"] = scaling.bottlenecks(ops[ops["stage"] == "denoiser"], "time_s", 10)
    if "roofline" in run:
        point["roofline"] = run["roofline"]
    if accel is not None:  # sweep --accel: the point on accelerator designs
        point["accel"] = {k: {"latency_s": a["latency_s"], "energy_j": a["energy_j"],
                              "speedup_over_dense": a["speedup_over_dense"],
                              "speedup_over_gpu_roofline": a["speedup_over_gpu_roofline"]}
                          for k, a in accel["accel"].items()}
    if run.get("approx"):
        point["approx"] = {k: run["approx"].get(k) for k in ("method", "value", "setting", "attention_share_saved",
                                                          "end_to_end_share_saved", "kept_fraction")}
    return point


def findings(rows: list[dict]) -> dict:
    """Everything a sweep states, from its finished points' summaries (:func:`point_summary`): exponents per layer
    class and stage, the crossover of its two leading classes (see :mod:`diffprobe.analyses.scaling`)."""
    result: dict = {"points": rows}
    if not rows:
        return result
    result["denoiser"] = rows[0]["denoiser"]  # "unet" or "transformer": what the tables show (share_classes)
    # scaling with side, at the smallest batch (and a video's fewest frames)
    b0 = min(p["batch"] for p in rows)
    f0 = min((p["frames"] for p in rows if p.get("frames")), default=None)
    series = sorted((p for p in rows if p["batch"] == b0 and p.get("frames") == f0), key=lambda p: p["side"])
    result["exponents_batch"] = b0
    if f0 is not None:
        result["exponents_frames_at"] = f0
    # a UNet: self-attention against convolution; a diffusion transformer (no convolutions to speak of): the
    # quadratic token mixing against the per-token linear layers
    pair = CROSSOVER[rows[0]["denoiser"]]
    result["crossover_pair"] = list(pair)
    result["exponents"], result["crossover"] = _along(series, [p["side"] for p in series], pair, "px")
    # a video sweep: scaling with latent frames (the transformer's tokens grow with them), at the smallest side
    s0 = min((p["side"] for p in rows if p["batch"] == b0), default=None)
    clip = sorted((p for p in rows if p["batch"] == b0 and p["side"] == s0 and p.get("latent_frames")),
                  key=lambda p: p["latent_frames"])
    if len({p["latent_frames"] for p in clip}) > 1:
        result["frames_series_side"] = s0
        result["exponents_latent_frames"], crossover = _along(clip, [p["latent_frames"] for p in clip], pair,
                                                              "latent frames")
        result["crossover_latent_frames"] = {q: c and {("latent_frames" if k == "side" else k): v
                                                       for k, v in c.items()} for q, c in crossover.items()}
    return result


def _along(series: list[dict], xs: list[float], pair, unit: str) -> tuple[dict, dict]:
    """Exponents per layer class and stage of ``series`` (points in axis order) against ``xs`` (their sides, or
    latent frames), and where ``pair[0]`` overtakes ``pair[1]`` along it (in ``unit``)."""
    exponents: dict = {}
    for quantity in ("flops", "seconds"):
        if not all(quantity in p for p in series):
            continue
        classes = sorted({c for p in series for c in p[quantity]["denoiser"]})
        exponents[quantity] = {
            c: scaling.fit_exponent(xs, [p[quantity]["denoiser"].get(c, 0.0) for p in series]) for c in classes}
    stages = sorted({s for p in series for s in p["by_stage_flops"]})
    exponents["flops_by_stage"] = {
        s: scaling.fit_exponent(xs, [p["by_stage_flops"].get(s, 0) for p in series]) for s in stages}
    crossover = {}
    for quantity in ("flops", "seconds"):
        if all(quantity in p for p in series):
            crossover[quantity] = scaling.crossover(
                xs, [p[quantity]["denoiser"].get(pair[0], 0.0) for p in series],
                [p[quantity]["denoiser"].get(pair[1], 0.0) for p in series], unit)
    return exponents, crossover


CROSSOVER = {"unet": ("self_attention", "conv"), "transformer": ("attention_core", "linear_layers")}
