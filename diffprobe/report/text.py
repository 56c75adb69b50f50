"""Terminal tables (rich renderables) built from result dicts; the CLI prints them."""

from __future__ import annotations

from rich.table import Table

from diffprobe.report.findings import SHARE_CLASSES, eps_tau, sweep_findings
from diffprobe.report.units import fmt_k, fmt_n, fmt_s  # noqa: F401  (fmt_n, fmt_s: imported from here too)

EXPONENT_ROWS = ("total", "conv", "self_attention", "self_attention_core", "cross_attention", "ffn", "norm",
                 "activation", "elementwise", "linear", "attn_qkv.self", "attn_qkv.cross")


def sweep_tables(state: dict) -> list:
    """The sweep as renderables: points with shares, exponents, findings, skipped/failed points."""
    f = state.get("findings") or {}
    points = sorted(f.get("points") or [], key=lambda p: (p["batch"], p["side"]))
    items: list = []
    t = Table(title=f"sweep: {state.get('model')} ({state.get('mode')}), UNet FLOP shares per point",
              title_justify="left")
    cols = ["point", "tokens", "UNet FLOPs", *(c.replace("_attention", "-attn") for c in SHARE_CLASSES)]
    timed = any("seconds" in p for p in points)
    roof = any("roofline" in p for p in points)
    if timed:
        cols.append("UNet s")
    if roof:
        cols.append("roofline s")
    appr = next((p["approx"] for p in points if "approx" in p), None)
    if appr:
        cols.append(f"{appr['method']}={appr['value']:g} saved (attn / e2e)")
    cols += ["scores (unfused)", "fused"]
    for c in cols:
        t.add_column(c, justify="left" if c == "point" else "right")
    for p in points:
        u = p["flops"]["unet"]
        tot = u["total"] or 1
        row = [p["name"], str(p["tokens"]), fmt_n(u["total"]),
               *(f"{100 * u.get(c, 0) / tot:.1f}%" for c in SHARE_CLASSES)]
        if timed:
            row.append(fmt_s(p["seconds"]["stages"].get("unet", 0.0)) if "seconds" in p else "")
        if roof:
            row.append(fmt_s(p["roofline"]["prediction"]["total_s"]) if "roofline" in p else "")
        if appr:
            a = p.get("approx")
            row.append(f"{100 * a['attention_flops_saved']:.1f}% / {100 * a['end_to_end_flops_saved']:.1f}%"
                       if a else "")
        mem = p["attention_memory"]
        row += [fmt_n(mem["materialized_bytes"]) + "B", fmt_n(mem["fused_bytes"]) + "B"]
        t.add_row(*row)
    items.append(t)
    fits = f.get("exponents", {})
    if fits.get("flops"):
        e = Table(title="scaling exponents k (cost ∝ side^k, log-log least squares; RMS residual in ln units)",
                  title_justify="left")
        e.add_column("UNet layer class")
        e.add_column("k (FLOPs)", justify="right")
        e.add_column("residual", justify="right")
        if "seconds" in fits:
            e.add_column("k (seconds)", justify="right")
            e.add_column("residual ", justify="right")
        for c, fit in sorted(fits["flops"].items(), key=lambda kv: -(kv[1]["k"] if kv[1] else 0)):
            if fit is None or c not in EXPONENT_ROWS:  # every class is in the JSON; the table keeps the main ones
                continue
            row = [c, fmt_k(fit["k"]), f"{fit['rms_log_residual']:.3f}"]
            if "seconds" in fits:
                s = fits["seconds"].get(c)
                row += [fmt_k(s["k"]), f"{s['rms_log_residual']:.3f}"] if s else ["", ""]
            e.add_row(*row)
        if e.row_count:
            items.append(e)
    if len(points) < 2:
        items.append("scaling exponents need at least two resolutions: add more to --resolutions")
    for p in state.get("points", {}).values():
        if p.get("status") in ("failed", "skipped"):
            items.append(f"{p['status']}: {p.get('message', '')}")
    items.extend(sweep_findings(state))
    return items


def compare_table(d: dict) -> Table:
    """Metrics of a comparison, one column per run, ratios to the baseline in parentheses."""
    t = Table(title=f"compare ({d['of']} runs; baseline {d['baseline']})", title_justify="left")
    t.add_column("metric")
    for r in d["runs"]:
        status = r.get("status", "ok")
        t.add_column(r["label"] + ("" if status == "ok" else f" ({status})"), justify="right")
    for row in compare_rows(d):
        t.add_row(*row)
    return t


def compare_rows(d: dict) -> list[list[str]]:
    """[metric, value (×ratio), ...] per metric of a comparison, formatted by the metric's unit."""
    rows = []
    for k, row in d["metrics"].items():
        fmt = fmt_s if k.startswith("seconds") or k.endswith("seconds") else (
            (lambda x: f"{100 * x:.1f}%") if k.endswith("share") else fmt_n)
        cells = []
        for lb, v in row.items():
            r = d["ratios"][k][lb]
            cells.append(("" if v is None else fmt(v)) + ("" if r is None or lb == d["baseline"] else f" (×{r:.3g})"))
        rows.append([k, *cells])
    return rows


def sparsity_rows(state: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the sparsity summary: mean statistics by resolution, self/cross and UNet level."""
    e, t = eps_tau(state)
    b = state["blocks"][0]
    headers = ["resolution", "attention", "level", f"p < {e:g}", f"keys for {t:g}", "entropy", f"empty {b}-blocks",
               f"{b}-blocks for {t:g}"]
    rows = []
    for res, s in state["summary"].items():
        items = [(kind, "all", m) for kind, m in s["by_kind"].items()]
        items += [("both", lv, m) for lv, m in s["by_level"].items()]
        for kind, lv, m in items:
            rows.append([res, kind, lv, f"{100 * m[f'below_{e:g}']:.1f}%", f"{100 * m[f'keys_frac_{t:g}']:.1f}%",
                         f"{m['entropy']:.2f}", f"{100 * m[f'empty_blocks_{b}_{e:g}']:.1f}%",
                         f"{100 * m[f'blocks_{b}_{t:g}']:.1f}%"])
    return headers, rows


def sparsity_table(state: dict) -> Table:
    """Mean statistics by resolution, self/cross and UNet level."""
    tab = Table(title=f"attention sparsity: {state['model']} (means over heads, steps and layers)",
                title_justify="left")
    headers, rows = sparsity_rows(state)
    for col in headers:
        tab.add_column(col, justify="left" if col in ("resolution", "attention", "level") else "right")
    for row in rows:
        tab.add_row(*row)
    return tab


def approx_table(state: dict) -> Table:
    """The trade-off: one row per method and parameter value, dense first."""
    t = Table(title=f"approximate attention vs dense: {state['model']} {state['height']}x{state['width']}, "
              f"{state['steps']} steps, {len(state['prompts'])} image(s)", title_justify="left")
    cols = ["method", "param", "attn FLOPs saved", "end-to-end saved", "kept", "UNet s", "kernel", "PSNR", "SSIM"]
    digits = state["results"][0].get("accuracy") is not None
    clip = state["results"][0].get("clip_score") is not None
    if digits:
        cols.append("digit accuracy")
    if clip:
        cols.append("CLIP score")
    for c in cols:
        t.add_column(c, justify="left" if c in ("method", "param") else "right")
    for r in state["results"]:
        param = "" if r["method"] == "dense" else f"{r['param']}={r['value']:g}"
        row = [r["method"], param, f"{100 * r['attention_flops_saved']:.1f}%",
               f"{100 * r['end_to_end_flops_saved']:.1f}%",
               f"{100 * r['kept_fraction']:.1f}%", fmt_s(r["unet_s"]), r.get("kernel", ""),
               "identical" if r["psnr"] is None else f"{r['psnr']:.1f} dB", f"{r['ssim']:.3f}"]
        if digits:
            row.append(f"{100 * r['accuracy']:.0f}%")
        if clip:
            row.append(f"{r['clip_score']:.2f}")
        t.add_row(*row)
    return t
