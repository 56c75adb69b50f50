"""Figures (matplotlib, no pyplot state): each function takes result data and returns a ``Figure``.

Colours are fixed per layer type / class across every figure, so a colour means the same thing everywhere.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.figure import Figure

from diffprobe.records.schema import LAYER_TYPES
from diffprobe.units import setting_name, setting_series, si_scale

_TAB = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
    "#86bcb6", "#d37295", "#fabfd2", "#8cd17d", "#499894", "#b6992d", "#79706e", "#d4a6c8", "#a0cbe8",
]
COLORS = {lt: _TAB[i % len(_TAB)] for i, lt in enumerate(LAYER_TYPES)}
# the layer types past the palette's end, each its own colour (not the palette's first again)
COLORS.update({"patchify": "#17becf", "linattn_kv": "#1b9e77", "linattn_q": "#66a61e", "moe_router": "#636363",
               "moe_shared": "#9e9ac8", "moe_expert": "#3b3eac", "moe_dispatch": "#969696"})
COLORS.update({"self_attention": "#e15759", "cross_attention": "#f28e2b", "self_attention_core": "#b6992d",
               "joint_attention": "#d37295", "linear_attention": "#499894", "attention_core": "#b6992d",
               "linear_layers": "#59a14f", "unattributed": "#d3d3d3", "total": "#333333"})
CLASS_ORDER = ("conv", "self_attention", "cross_attention", "joint_attention", "linear_attention", "ffn", "linear",
               "modulation", "norm", "activation", "elementwise", "rope", "patchify", "embedding", "resample", "memory",
               "other")  # disjoint: each attention kind is its whole layers (projections, core, output)


def color(name: str) -> str:
    return COLORS.get(name, COLORS.get(name.split(".")[0], "#999999"))


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def svg_text(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    return buf.getvalue()


def _stacked_bars(ax, table: dict[str, dict[str, float]], scale: float, unit: str, title: str) -> None:
    """table: group (x) -> layer type -> value."""
    groups = [g for g in table if sum(table[g].values()) > 0]
    types = sorted({t for g in groups for t in table[g]}, key=lambda t: -sum(table[g].get(t, 0) for g in groups))
    bottom = np.zeros(len(groups))
    for t in types:
        vals = np.array([table[g].get(t, 0.0) for g in groups], dtype=float) / scale
        if not vals.any():
            continue
        ax.bar(groups, vals, bottom=bottom, label=t, color=color(t), edgecolor="white", linewidth=0.4)
        bottom += vals
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def stage_layer_bars(run: dict) -> Figure:
    """FLOPs (and measured seconds) per stage, stacked by layer type."""
    timed = "seconds" in run
    fig = Figure(figsize=(12 if timed else 6.5, 4), layout="constrained")
    axes = fig.subplots(1, 2 if timed else 1, squeeze=False)[0]
    by_stage = run["flops"]["by_stage_layer_type"]
    scale, unit = si_scale(max((sum(v.values()) for v in by_stage.values()), default=0), "FLOP")
    _stacked_bars(axes[0], by_stage, scale, unit, "FLOPs by stage and layer type")
    if timed:
        _stacked_bars(axes[1], run["seconds"]["by_stage_layer_type"], 1, "seconds",
                      "measured time by stage and layer type")
    return fig


def step_timeline(run: dict) -> Figure | None:
    """Per denoising step: measured UNet and scheduler seconds (measured runs), else FLOPs per step."""
    steps = run.get("step_times") or []
    fig = Figure(figsize=(7.5, 3.2), layout="constrained")
    ax = fig.subplots()
    if steps:
        x = [s["step"] for s in steps]
        ax.bar(x, [s["denoiser_s"] for s in steps], label="denoiser", color=color("conv"))
        ax.bar(x, [s["scheduler_s"] for s in steps], bottom=[s["denoiser_s"] for s in steps], label="scheduler",
               color=color("elementwise"))
        ax.set_ylabel("seconds", fontsize=10)
        ax.set_title("measured time per denoiser evaluation", fontsize=11)
    else:
        by_step = run.get("flops", {}).get("by_step") or {}
        if not by_step:
            return None
        scale, unit = si_scale(max(by_step.values()), "FLOP")
        ax.bar([int(k) for k in by_step], [v / scale for v in by_step.values()], color=color("conv"))
        ax.set_ylabel(unit, fontsize=10)
        ax.set_title("FLOPs per denoiser evaluation", fontsize=11)
    ax.set_xlabel("denoiser evaluation (denoising step)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if steps:  # beside the axes: over the bars it hides them
        ax.legend(fontsize=9, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def roofline_figure(roof_ops, preset, title: str) -> Figure:
    """Layer types as points on the preset's roofline (aggregate intensity = FLOPs / bytes, attainable FLOP/s;
    measured runs add the achieved FLOP/s as hollow markers)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    dtype = str(roof_ops.groupby("dtype")["flops"].sum().idxmax()) if len(roof_ops) else "float32"
    peak, bw = preset.peak(dtype), preset.memory_bandwidth
    g = roof_ops[roof_ops["bytes"] > 0].groupby("layer_type").agg(
        flops=("flops", "sum"), bytes=("bytes", "sum"), time_s=("time_s", "sum"))
    g = g[g["flops"] > 0]
    ai = (g["flops"] / g["bytes"]).astype(float)
    lo = max(float(ai.min()) / 4, 1e-2) if len(g) else 1e-2
    hi = max(float(ai.max()) * 4, peak / bw * 8) if len(g) else peak / bw * 8
    xs = np.logspace(math.log10(lo), math.log10(hi), 200)
    ax.plot(xs, np.minimum(peak, xs * bw), color="#333333", linewidth=1.5,
            label=f"{preset.name} {dtype}: {peak / 1e12:.3g} TFLOP/s, {bw / 1e9:.4g} GB/s")
    ax.axvline(peak / bw, color="#999999", linestyle=":", linewidth=1)
    for lt, r in g.iterrows():
        ai = r["flops"] / r["bytes"]
        ax.scatter([ai], [min(peak, ai * bw)], color=color(lt), s=40, zorder=3, label=lt)
        if r["time_s"] == r["time_s"] and r["time_s"] > 0:  # measured: achieved FLOP/s
            ax.scatter([ai], [r["flops"] / r["time_s"]], facecolors="none", edgecolors=color(lt), s=60, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("FLOP/s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower right", ncol=2)
    return fig


def _axis(findings: dict, quantity: str, axis: str = "side") -> tuple[list[dict], list[float], str, dict, dict]:
    """The sweep's ``axis`` to draw: its points along the image side (at the smallest batch, and a video's fewest
    frames) with their sides, or (``"frames"``) a video sweep's points along latent frames at its smallest side;
    returns the points, their x values, the x unit, the exponents and the crossovers along it."""
    b0 = findings.get("exponents_batch", 1)
    f0 = findings.get("exponents_frames_at")
    pts = sorted((p for p in findings["points"] if p["batch"] == b0 and p.get("frames") == f0 and quantity in p),
                 key=lambda p: p["side"])
    if axis == "frames" and findings.get("exponents_latent_frames"):
        s0 = findings.get("frames_series_side")
        pts = sorted((p for p in findings["points"] if p["batch"] == b0 and p["side"] == s0 and quantity in p),
                     key=lambda p: p["latent_frames"])
        return (pts, [p["latent_frames"] for p in pts], "latent frames", findings["exponents_latent_frames"],
                {q: c and {**c, "side": c.get("latent_frames")} for q, c in
                 (findings.get("crossover_latent_frames") or {}).items()})
    return pts, [p["side"] for p in pts], "px", findings.get("exponents", {}), findings.get("crossover") or {}


def share_area(findings: dict, quantity: str = "flops", axis: str = "side") -> Figure | None:
    """Denoiser shares per layer class vs image side or latent frames (``axis``; stacked area), the crossover of
    the sweep's two leading classes marked."""
    pts, sides, unit, _, crossovers = _axis(findings, quantity, axis)
    if len(pts) < 2:
        return None
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    classes = [c for c in CLASS_ORDER if any(p[quantity]["denoiser"].get(c, 0) > 0 for p in pts)]
    shares = []
    for c in classes:
        shares.append([100 * p[quantity]["denoiser"].get(c, 0) / (p[quantity]["denoiser"]["total"] or 1) for p in pts])
    # the classes do not overlap: attention rows belong to self/cross attention only (their per-type classes
    # carry a ".self"/".cross" suffix and are not stacked here)
    ax.stackplot(sides, *shares, labels=classes, colors=[color(c) for c in classes], alpha=0.9)
    cross = crossovers.get(quantity)
    if cross and cross.get("side") is not None and not cross.get("already_ahead") and (
            sides[0] <= cross["side"] <= sides[-1]):
        ax.axvline(cross["side"], color="black", linestyle="--", linewidth=1)
        a, b = (c.replace("_core", "").replace("_layers", " layers").replace("_", "-")
                for c in findings.get("crossover_pair") or ("self_attention", "conv"))
        ax.annotate(f"{a} > {b}\n≈ {cross['side']:.{0 if unit == 'px' else 1}f} {unit}", (cross["side"], 95),
                    fontsize=9,
                    ha="left", va="top", xytext=(4, 0), textcoords="offset points")
    ax.set_xlim(sides[0], sides[-1])
    ax.set_ylim(0, 100)
    ax.set_xlabel("image side (px)" if unit == "px" else unit)
    ax.set_ylabel(f"share of denoiser {'FLOPs' if quantity == 'flops' else 'time'} (%)")
    ax.set_title(f"denoiser {'FLOP' if quantity == 'flops' else 'time'} shares by layer class", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def loglog(findings: dict, quantity: str = "flops", axis: str = "side") -> Figure | None:
    """Denoiser cost per class vs side or latent frames (``axis``) on log-log axes, with the fitted exponent in each
    label (the key beside the axes)."""
    pts, sides, unit, exponents, _ = _axis(findings, quantity, axis)
    fits = exponents.get(quantity, {})
    if len(pts) < 2:
        return None
    sides = np.array(sides, dtype=float)
    fig = Figure(figsize=(8.5, 4.5))
    ax = fig.subplots()
    fig.subplots_adjust(right=0.68)
    for c in ("total", "self_attention_core", "attention_core", "self_attention", "joint_attention", "conv",
              "linear_layers", "ffn", "cross_attention", "norm"):
        vals = np.array([p[quantity]["denoiser"].get(c, 0.0) for p in pts])
        fit = fits.get(c)
        if not fit or not (vals > 0).all():
            continue
        ax.plot(sides, vals, "o", color=color(c), markersize=4)
        ax.plot(sides, np.exp(fit["b"]) * sides ** fit["k"], "-", color=color(c), linewidth=1,
                label=f"{c}: k = {round(fit['k'], 2) + 0.0:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("image side (px)" if unit == "px" else unit)
    ax.set_ylabel("denoiser FLOPs" if quantity == "flops" else "denoiser seconds (measured ops)")
    ax.set_title(f"scaling: cost ∝ {'side' if unit == 'px' else 'latent frames'}^k (lines: least-squares fits)",
                 fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def compare_bars(names: list[str], table: dict[str, dict[str, float]], unit: str, title: str) -> Figure:
    """Grouped bars: for each key (stage or layer type), one bar per run."""
    keys = [k for k in table if any(table[k].get(n, 0) for n in names)]
    fig = Figure(figsize=(max(6, 0.9 * len(keys) + 2), 3.8))
    ax = fig.subplots()
    width = 0.8 / max(1, len(names))
    x = np.arange(len(keys))
    for i, n in enumerate(names):
        ax.bar(x + i * width, [table[k].get(n, 0.0) for k in keys], width, label=n, color=_TAB[i % len(_TAB)])
    ax.set_xticks(x + width * (len(names) - 1) / 2, keys, rotation=20, fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    return fig


def sparsity_heatmap(table, column: str, title: str) -> Figure:
    """Layer (rows, in execution order) × denoising step (columns), mean over heads of ``column``."""
    grid = table.groupby(["layer", "step"], sort=False)[column].mean().unstack("step")
    fig = Figure(figsize=(8, max(2.5, 0.28 * len(grid) + 1.2)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   interpolation="nearest")
    ax.set_yticks(range(len(grid)), [str(i) for i in grid.index], fontsize=6)
    every = max(1, len(grid.columns) // 12)  # whole steps, at most a dozen labels
    ax.set_xticks(range(0, len(grid.columns), every), [str(s) for s in grid.columns[::every]])
    ax.set_xlabel("denoiser evaluation (denoising step)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def sparsity_histogram(table, column: str, title: str) -> Figure:
    """Distribution of ``column`` over every layer × head × step, self and cross attention separately."""
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    for kind, g in table.groupby("attn_kind"):
        ax.hist(g[column].to_numpy(dtype=float), bins=40, range=(0, 1), alpha=0.6, label=f"{kind}-attention",
                color=color(f"{kind}_attention"))
    ax.set_xlabel(column)
    ax.set_ylabel("layer × head × step")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def tradeoff(results: list[dict]) -> Figure:
    """Attention FLOPs saved vs quality (PSNR, SSIM, digit accuracy when present), one line per method."""
    metrics = [("psnr", "PSNR vs dense (dB)"), ("ssim", "SSIM vs dense")]
    if results and results[0].get("accuracy") is not None:
        metrics.append(("accuracy", "digit accuracy"))
    fig = Figure(figsize=(4.2 * len(metrics), 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    series = setting_series
    methods = list(dict.fromkeys(series(r) for r in results if r["method"] != "dense"))
    dense = next((r for r in results if r["method"] == "dense"), None)
    finite_psnr = [r["psnr"] for r in results if r["psnr"] is not None]
    cap = (max(finite_psnr) + 5) if finite_psnr else 60.0  # identical images (no PSNR) are drawn at the cap
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for i, m in enumerate(methods):
            pts = sorted(((100 * r["attention_share_saved"], r[key]) for r in results
                          if r["method"] != "dense" and series(r) == m),
                         key=lambda p: p[0])
            ys = [(cap if y is None else min(y, cap)) if key == "psnr" else y for _, y in pts]
            ax.plot([x for x, _ in pts], ys, "o-", label=m, color=_TAB[i % len(_TAB)])
        if dense is not None and key != "psnr":
            ax.axhline(dense[key], color="#333333", linestyle=":", linewidth=1, label="dense")
        ax.set_xlabel("attention FLOPs saved (%)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, frameon=False)
    return fig


def accel_figure(acc: dict) -> Figure:
    """Accelerator designs side by side: latency by layer type (stacked), energy by component (stacked) and, for
    designs that skip attention, the speedup over their dense counterpart against a uniform kept density."""
    designs = list(acc["accel"])
    curves = {d: a["speedup_vs_density"] for d, a in acc["accel"].items() if a.get("speedup_vs_density")}
    fig = Figure(figsize=(15 if curves else 11, 4.8), layout="constrained")
    axes = fig.subplots(1, 3 if curves else 2)
    ax1, ax2 = axes[0], axes[1]
    types = sorted({t for a in acc["accel"].values() for t in a["by_layer_type"]},
                   key=lambda t: -acc["accel"][designs[0]]["by_layer_type"].get(t, {}).get("latency_s", 0.0))
    bottom = [0.0] * len(designs)
    for t in types:
        vals = [acc["accel"][d]["by_layer_type"].get(t, {}).get("latency_s", 0.0) for d in designs]
        if any(vals):
            ax1.bar(designs, vals, bottom=bottom, label=t, color=color(t))
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax1.set_ylabel("seconds", fontsize=10)
    ax1.set_title("latency by layer type", fontsize=11)
    handles, labels = ax1.get_legend_handles_labels()
    bottom = [0.0] * len(designs)
    for comp in ("mac", "vector", "sram", "dram"):
        vals = [acc["accel"][d]["energy_by_component"][comp] for d in designs]
        ax2.bar(designs, vals, bottom=bottom, label=comp)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax2.set_ylabel("joules", fontsize=10)
    ax2.set_title("energy by component", fontsize=11)
    ax2.legend(fontsize=9, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=9, rotation=15)
    if curves:
        ax3 = axes[2]
        for d, pts in curves.items():
            ax3.plot([q["density"] for q in pts], [q["speedup"] for q in pts], marker="o", label=d)
        ax3.set_xscale("log")
        ax3.invert_xaxis()
        ax3.axhline(1.0, color="grey", lw=0.8)
        ax3.set_xlabel("kept self-attention density (uniform)")
        ax3.set_ylabel("speedup over the dense design")
        ax3.set_title("speedup vs kept density", fontsize=11)
        ax3.legend(fontsize=9, frameon=False)
    # the layer types' key below the figure: inside the latency axes it covered a bar
    fig.legend(handles[::-1], labels[::-1], loc="outside lower center", ncol=min(8, len(labels)), fontsize=9,
               frameon=False, title="layer types (latency panel)", title_fontsize=9)
    return fig


def pareto(results: list[dict]) -> Figure:
    """Every setting's end-to-end FLOPs saved and UNet seconds saved against its quality (SSIM vs dense), with the
    Pareto front (no other setting saves more at equal or better quality) drawn through the points."""
    dense = next((r for r in results if r["method"] == "dense"), None)
    pts = [r for r in results if r["method"] != "dense"]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    methods = list(dict.fromkeys(setting_series(r) for r in pts))
    base = dense["denoiser_s"] if dense and dense["denoiser_s"] else None
    for ax, (key, label) in zip(axes, (("flops", "end-to-end FLOPs saved (%)"),
                                       ("seconds", "denoiser seconds saved vs dense (%)")), strict=True):
        xy = []
        for i, r in enumerate(pts):
            c = _TAB[methods.index(setting_series(r)) % len(_TAB)]
            if key == "flops":
                y = 100 * r["end_to_end_share_saved"]
                ax.plot([r["ssim"]], [y], "o", color=c)
            else:
                y = 100 * (1 - r["denoiser_s"] / base) if base else 0.0
                lo, hi = r.get("denoiser_s_min"), r.get("denoiser_s_max")
                if base and lo is not None and (r.get("runs") or 1) > 1:  # the spread of the repeated runs
                    ax.errorbar([r["ssim"]], [y], yerr=[[y - 100 * (1 - hi / base)], [100 * (1 - lo / base) - y]],
                                fmt="o", color=c, capsize=2, linewidth=0.8)
                else:
                    ax.plot([r["ssim"]], [y], "o", color=c)
            # numbered points, the key beside the figure: names written on the points overlap where they crowd
            ax.annotate(str(i + 1), (r["ssim"], y), fontsize=8, xytext=(4, 3), textcoords="offset points")
            xy.append((r["ssim"], y))
        front, best = [], float("-inf")
        for x, y, *_ in sorted(xy, key=lambda p: -p[0]):  # from the best quality down: keep what saves more
            if y > best:
                front.append((x, y))
                best = y
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], "-", color="#333333", linewidth=1)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xlabel("SSIM vs dense (quality)", fontsize=10)
        ax.set_ylabel(label, fontsize=10)
    from matplotlib.lines import Line2D

    key = [Line2D([], [], marker="o", linestyle="", color=_TAB[methods.index(setting_series(r)) % len(_TAB)],
                  label=f"{i + 1}  {setting_name(r)}") for i, r in enumerate(pts)]
    key.append(Line2D([], [], color="#333333", linewidth=1, label="Pareto front"))
    fig.legend(handles=key, loc="outside right upper", fontsize=8, frameon=False)
    return fig
