"""The sections of a sweep (``sweep.json``), for the terminal and ``report.html`` alike: the points with the
denoiser's FLOP shares by layer class (a UNet's, or a diffusion transformer's: joint attention, no convolution),
scaling exponents, the figures, the roofline and the largest costs at the largest point."""

from __future__ import annotations

from pathlib import Path

from diffprobe.analyses.findings import LABEL, share_classes
from diffprobe.records.documents import SweepDocument
from diffprobe.report import figures as figs
from diffprobe.report.profile import roofline_sections, setting_label
from diffprobe.report.sections import Figure, Section
from diffprobe.units import fmt_k, fmt_n, fmt_s

EXPONENT_ROWS = ("total", "conv", "self_attention", "self_attention_core", "cross_attention", "joint_attention",
                 "attention_core", "linear_layers", "ffn", "norm", "activation", "elementwise", "linear",
                 "attn_qkv.self", "attn_qkv.cross")


SHORT = {"attention_core": "attn core", "joint_attention": "joint attn", "self_attention": "self-attn",
         "cross_attention": "cross-attn", "linear_layers": "linear layers", "ffn": "FFN", "conv": "conv",
         "norm": "norm"}


def _points(state: SweepDocument) -> list[dict]:
    return sorted((state.findings or {}).get("points") or [], key=lambda p: (p["batch"], p["side"]))


def status(state: SweepDocument, folder: Path) -> Section:
    """What the sweep covers: unfinished, analytic, random weights, points that failed or were skipped."""
    pts = _points(state)
    banners = []
    if state.complete is False:
        banners.append(f"This sweep did not finish: the findings below come from the {len(pts)} points it completed; "
                       "re-run the same command to resume it.")
    if state.mode == "analytic":
        banners.append("Analytic sweep: every point counted on the meta device, with no weights and no compute: FLOPs "
                       "and bytes are exact; nothing was timed.")
    elif state.random_weights:
        banners.append("Random weights: FLOPs and timings are real; image content and sparsity are not.")
    failed = [f"{p['status']}: {p.get('message', '')}" for p in (state.points or {}).values()
              if p.get("status") in ("failed", "skipped")]
    return Section("Status", banners=banners + failed, fail=bool(failed), terminal_banners=True,
                   page_only=not failed)


def findings(state: SweepDocument, folder: Path) -> Section:
    return Section("Findings", notes=list((state.findings or {}).get("sentences") or []))


def points(state: SweepDocument, folder: Path) -> Section | None:
    pts = _points(state)
    if not pts:
        return None
    # a UNet's layer classes, or a diffusion transformer's (those with no FLOPs at any point left out: SD3's attention
    # is all joint, so no self- or cross-attention column)
    classes = [c for c in share_classes(state.findings or {}) if any(p["flops"]["denoiser"].get(c) for p in pts)]
    timed = any("seconds" in p for p in pts)
    roof = any("roofline" in p for p in pts)
    appr = next((p["approx"] for p in pts if "approx" in p), None)
    designs = list(dict.fromkeys(d for p in pts for d in p.get("accel", {})))
    headers = ["point", "tokens", "denoiser FLOPs", *(SHORT.get(c, c) for c in classes)]
    headers += (["denoiser s"] if timed else []) + (["roofline s"] if roof else [])
    headers += [f"{setting_label(appr)} saved (attn / e2e)"] if appr else []
    headers += [f"{d} s" for d in designs] + ["scores (unfused)", "fused"]
    rows = []
    for p in pts:
        u = p["flops"]["denoiser"]
        tot = u["total"] or 1
        row = [p["name"], str(p["tokens"]), fmt_n(u["total"]), *(f"{100 * u.get(c, 0) / tot:.1f}%" for c in classes)]
        if timed:
            row.append(fmt_s(p["seconds"]["stages"].get("denoiser", 0.0)) if "seconds" in p else "")
        if roof:
            row.append(fmt_s(p["roofline"]["prediction"]["total_s"]) if "roofline" in p else "")
        if appr:
            a = p.get("approx")
            row.append(f"{100 * a['attention_share_saved']:.1f}% / {100 * a['end_to_end_share_saved']:.1f}%"
                       if a else "")
        row += [fmt_s(p["accel"][d]["latency_s"]) if d in p.get("accel", {}) else "" for d in designs]
        mem = p["attention_memory"]
        rows.append(row + [fmt_n(mem["materialized_bytes"], "B"), fmt_n(mem["fused_bytes"], "B")])
    notes = ["shares of the denoiser's FLOPs: " + ", ".join(f"{SHORT[c]} = {LABEL[c]}" for c in classes if c in SHORT)]
    if "attention_core" in classes:
        notes.append("a diffusion transformer's classes overlap, so its shares add up to more than 100%: the attention "
                     "layers (self, cross or joint) include their projections and their core; the linear layers are "
                     "the projections, FFN and other per-token GEMMs")
    if len(pts) < 2:
        notes.append("scaling exponents need at least two resolutions: add more to --resolutions")
    return Section(f"Sweep: {state.model} ({state.mode}), denoiser FLOP shares per point", headers,
                   rows, notes)


def exponents(state: SweepDocument, folder: Path) -> list[Section] | None:
    """The scaling exponents along the image side and, for a video sweep over frames, along latent frames: a table
    of the main layer classes and the figures of each axis."""
    f = state.findings or {}
    out = []
    for axis, fits, what, unit in (("side", f.get("exponents", {}), "the image side", "side"),
                                   ("frames", f.get("exponents_latent_frames", {}), "frames", "latent frames")):
        if not any((fits.get("flops") or {}).values()):
            continue
        timed = "seconds" in fits
        rows = []
        for c, fit in sorted(fits["flops"].items(), key=lambda kv: -(kv[1]["k"] if kv[1] else 0)):
            if fit is None or c not in EXPONENT_ROWS:  # every class is in the JSON; the table keeps the main ones
                continue
            row = [c, fmt_k(fit["k"]), f"{fit['rms_log_residual']:.3f}"]
            if timed:
                s = fits["seconds"].get(c)
                row += [fmt_k(s["k"]), f"{s['rms_log_residual']:.3f}"] if s else ["", ""]
            rows.append(row)
        name = "" if axis == "side" else "_frames"
        x = "image side" if axis == "side" else "latent frames"
        figures = [
            Figure(f"shares_flops{name}", f"denoiser FLOP shares vs {x}",
                   lambda axis=axis: figs.share_area(f, "flops", axis), True),
            Figure(f"shares_seconds{name}", f"denoiser measured-time shares vs {x}",
                   lambda axis=axis: figs.share_area(f, "seconds", axis), True),
            Figure(f"scaling_flops{name}", f"denoiser FLOPs vs {x}, log-log, with fitted exponents",
                   lambda axis=axis: figs.loglog(f, "flops", axis), True),
            Figure(f"scaling_seconds{name}", f"denoiser measured op time vs {x}, log-log",
                   lambda axis=axis: figs.loglog(f, "seconds", axis), True)]
        out.append(Section(f"Scaling exponents along {what} k (cost ∝ {unit}^k, log-log least squares; RMS "
                           "residual in ln units)", ["denoiser layer class", "k (FLOPs)", "residual"]
                           + (["k (seconds)", "residual (s)"] if timed else []), rows, figures=figures))
    return out or None


def largest(state: SweepDocument, folder: Path) -> list[Section] | None:
    """The largest point: its roofline (with the figure of its records) and its largest denoiser costs."""
    pts = _points(state)
    if not pts:
        return None
    last = pts[-1]
    out = []
    if last.get("roofline"):
        for s in roofline_sections(last["roofline"], folder / "points" / last["name"]) or []:
            s.title = f"{s.title}, at {last['name']}"
            for fig in s.figures:
                fig.name = "roofline_largest"
            out.append(s)
    if last.get("bottlenecks"):
        out.append(Section(f"Largest denoiser costs at {last['name']}", ["level", "tokens", "layer class", "FLOPs",
                                                                         "share"],
                           [[b["level"], str(b["tokens"]), b["layer_class"], fmt_n(b["flops"]),
                             f"{100 * b['share']:.1f}%"] for b in last["bottlenecks"]], left=3))
    return out


SECTIONS = [status, findings, points, exponents, largest]
