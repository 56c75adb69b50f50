"""Terminal tables (rich renderables) built from result dicts; the CLI prints them."""

from __future__ import annotations

from rich.table import Table

from diffprobe.errors import plural
from diffprobe.report.findings import eps_tau, share_classes, sweep_findings
from diffprobe.report.units import fmt_bytes, fmt_k, fmt_n, fmt_s

EXPONENT_ROWS = ("total", "conv", "self_attention", "self_attention_core", "cross_attention", "joint_attention",
                 "attention_core", "linear_layers", "ffn", "norm", "activation", "elementwise", "linear",
                 "attn_qkv.self", "attn_qkv.cross")


def sweep_tables(state: dict) -> list:
    """The sweep as renderables: points with shares, exponents, findings, skipped/failed points."""
    f = state.get("findings") or {}
    points = sorted(f.get("points") or [], key=lambda p: (p["batch"], p["side"]))
    items: list = []
    classes = share_classes(state.get("findings") or {})
    t = Table(title=f"sweep: {state.get('model')} ({state.get('mode')}), denoiser FLOP shares per point",
              title_justify="left")
    cols = ["point", "tokens", "denoiser FLOPs", *(c.replace("_attention", "-attn").replace("_", " ")
                                                   for c in classes)]
    timed = any("seconds" in p for p in points)
    roof = any("roofline" in p for p in points)
    if timed:
        cols.append("denoiser s")
    if roof:
        cols.append("roofline s")
    appr = next((p["approx"] for p in points if "approx" in p), None)
    if appr:
        cols.append(f"{setting_label(appr)} saved (attn / e2e)")
    designs = list(dict.fromkeys(d for p in points for d in p.get("accel", {})))
    cols += [f"{d} s" for d in designs]
    cols += ["scores (unfused)", "fused"]
    for c in cols:
        t.add_column(c, justify="left" if c == "point" else "right")
    for p in points:
        u = p["flops"]["denoiser"]
        tot = u["total"] or 1
        row = [p["name"], str(p["tokens"]), fmt_n(u["total"]),
               *(f"{100 * u.get(c, 0) / tot:.1f}%" for c in classes)]
        if timed:
            row.append(fmt_s(p["seconds"]["stages"].get("denoiser", 0.0)) if "seconds" in p else "")
        if roof:
            row.append(fmt_s(p["roofline"]["prediction"]["total_s"]) if "roofline" in p else "")
        if appr:
            a = p.get("approx")
            row.append(f"{100 * a['attention_flops_saved']:.1f}% / {100 * a['end_to_end_flops_saved']:.1f}%"
                       if a else "")
        row += [fmt_s(p["accel"][d]["latency_s"]) if d in p.get("accel", {}) else "" for d in designs]
        mem = p["attention_memory"]
        row += [fmt_n(mem["materialized_bytes"], "B"), fmt_n(mem["fused_bytes"], "B")]
        t.add_row(*row)
    items.append(t)
    fits = f.get("exponents", {})
    if fits.get("flops"):
        e = Table(title="scaling exponents k (cost ∝ side^k, log-log least squares; RMS residual in ln units)",
                  title_justify="left")
        e.add_column("denoiser layer class")
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
        last = k.rsplit(".", 1)[-1]
        fmt = fmt_s if k.startswith("seconds") or k.endswith("seconds") or last == "unet_s" else (
            (lambda x: f"{100 * x:.1f}%") if k.endswith("share") or last.endswith("_saved") or last in (
                "kept_fraction", "accuracy") or last.startswith(("below_", "keys_frac_", "blocks_", "empty_blocks_"))
            else (lambda x: f"{x:.3g}") if last in ("psnr", "ssim", "entropy", "clip_score") or last.startswith(
                "keys_") else fmt_n)
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


def approx_rows(state: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the trade-off: one row per method and parameter value, dense first."""
    headers = ["method", "param", "attn FLOPs saved", "end-to-end saved", "kept", "denoiser s", "kernel", "PSNR",
               "SSIM"]
    digits = state["results"][0].get("accuracy") is not None
    clip = state["results"][0].get("clip_score") is not None
    if digits:
        headers.append("digit accuracy")
    if clip:
        headers.append("CLIP score")
    rows = []
    for r in state["results"]:
        param = "" if r["method"] == "dense" else f"{r['param']}={r['value']:g}"
        method = r["method"]
        if r.get("setting") and "+" in r["setting"]:  # a composed setting: both methods, both parameters
            method, param = "+".join(p.split("=")[0] for p in r["setting"].split("+")), r["setting"]
        if (r.get("mask_interval") or 1) > 1 and "mask every" not in param:  # block masks reused across steps
            param += f", mask every {r['mask_interval']}"
        row = [method, param, f"{100 * r['attention_flops_saved']:.1f}%",
               f"{100 * r['end_to_end_flops_saved']:.1f}%",
               f"{100 * r['kept_fraction']:.1f}%", fmt_s(r["unet_s"]), r.get("kernel", ""),
               "identical" if r["psnr"] is None else f"{r['psnr']:.1f} dB", f"{r['ssim']:.3f}"]
        if digits:
            row.append(f"{100 * r['accuracy']:.0f}%")
        if clip:
            row.append(f"{r['clip_score']:.2f}")
        rows.append(row)
    return headers, rows


def approx_table(state: dict) -> Table:
    """The trade-off: one row per method and parameter value, dense first."""
    from diffprobe.methods.reuse import REUSE

    what = "approximate attention" + (" and step reuse" if any(
        any(p.split("=")[0] in REUSE for p in (r.get("setting") or "").split("+")) for r in state["results"]) else "")
    t = Table(title=f"{what} vs dense: {state['model']} {state['height']}x{state['width']}, "
              f"{state['steps']} steps, {len(state['prompts'])} image(s)", title_justify="left")
    headers, rows = approx_rows(state)
    for c in headers:
        t.add_column(c, justify="left" if c in ("method", "param") else "right")
    for row in rows:
        t.add_row(*row)
    return t


def approx_columns(d: dict) -> list[tuple[str, dict, float]]:
    """The ``--approx`` columns of the cost account, as (header, FLOPs by layer type, total): the setting's, and
    before it the dense run's over the same evaluations where those are not the profile's own (a reuse method's
    account covers every step while the profile sampled some) — a column never compares other steps than its
    neighbour's."""
    ap = d.get("approx")
    if not ap:
        return []
    n = ap.get("unet_evals_accounted")
    if n is None or n == d.get("unet_evals_measured") or "dense_flops_by_layer_type" not in ap:
        return [(f"FLOPs, {setting_label(ap)}", ap["flops_by_layer_type"], ap["flops_total"])]
    return [(f"dense FLOPs, all {n} evals", ap["dense_flops_by_layer_type"], ap["dense_flops_total"]),
            (f"FLOPs, {setting_label(ap)}, all {n} evals", ap["flops_by_layer_type"], ap["flops_total"])]


def account_items(d: dict) -> list:
    """FLOPs, bytes and (measured) seconds per layer type, the UNet column beside the whole run."""
    items: list = []
    flops, nbytes, secs = d["flops"], d["bytes"], d.get("seconds")
    t = Table(title="cost account by layer type (whole run as traced; denoiser column: all its evaluations)",
              title_justify="left")
    for col in ("layer type", "FLOPs", "share", "denoiser FLOPs", "bytes"):
        t.add_column(col, justify="left" if col == "layer type" else "right")
    if secs:
        t.add_column("seconds", justify="right")
    approx = d.get("approx")
    extra = approx_columns(d)
    for header, _, _ in extra:
        t.add_column(header, justify="right")
    unet = flops["by_stage_layer_type"].get("denoiser", {})
    total = flops["total"] or 1
    names = sorted(flops["by_layer_type"], key=lambda k: -flops["by_layer_type"][k])
    if secs:
        names += [k for k in secs["by_layer_type"] if k not in names]
    for lt in names:
        f = flops["by_layer_type"].get(lt, 0)
        row = [lt, fmt_n(f), f"{100 * f / total:.1f}%", fmt_n(unet.get(lt, 0)),
               fmt_n(nbytes["by_layer_type"].get(lt, 0), "B")]
        if secs:
            row.append(fmt_s(secs["by_layer_type"].get(lt, 0.0)))
        row += [fmt_n(by_type.get(lt, 0.0)) for _, by_type, _ in extra]
        if f or (secs and secs["by_layer_type"].get(lt, 0.0) > 0) or nbytes["by_layer_type"].get(lt, 0):
            t.add_row(*row)
    if approx and "attn_predictor" in approx["flops_by_layer_type"]:
        t.add_row("attn_predictor", "", "", "", "", *([""] if secs else []),
                  *[fmt_n(by_type.get("attn_predictor", 0.0)) for _, by_type, _ in extra])
    row = ["total", fmt_n(flops["total"]), "100.0%", fmt_n(sum(unet.values())), fmt_n(nbytes["total"], "B")]
    if secs:
        row.append(fmt_s(secs["total"]))
    row += [fmt_n(tot) for _, _, tot in extra]
    t.add_row(*row, style="bold")
    items.append(t)
    if approx:
        items += approx_lines(approx)
    lit = sum(d["macs_conv_linear"].values())
    items.append(f"literature convention (conv + linear multiply-adds only): {fmt_n(lit)} MACs = "
                 f"{100 * 2 * lit / total:.1f}% of the complete FLOP count")
    if d.get("projection") and "flops_total" in d["projection"]:
        items.append(f"full-run FLOPs (projection, {d['projection']['unet_evals_full']} denoiser evals): "
                     f"{fmt_n(d['projection']['flops_total'])}")
    return items


def roofline_items(roof: dict) -> list:
    """Roofline-predicted seconds per stage, beside the measured ones when the run was measured."""
    items: list = []
    pred, vm = roof["prediction"], roof.get("versus_measured")
    t = Table(title=f"roofline on {roof['preset']} ({roof['preset_title']}), {roof['dtype']}: "
              f"ridge {roof['ridge_intensity']:.1f} FLOP/byte", title_justify="left")
    for col in ("stage", "roofline") + (("measured", "error", "of peak") if vm else ()):
        t.add_column(col, justify="left" if col == "stage" else "right")
    stages = vm["by_stage"] if vm else {s: None for s in pred["by_stage"]}
    for stage, r in stages.items():
        if r is None:
            t.add_row(stage, fmt_s(pred["by_stage"].get(stage, 0.0)))
            continue
        t.add_row(stage, fmt_s(r["predicted_s"]), fmt_s(r["measured_s"]),
                  "" if r["error"] is None else f"{100 * r['error']:+.0f}%",
                  "" if r.get("fraction_of_peak") is None else f"{100 * r['fraction_of_peak']:.0f}%")
    t.add_row("total", fmt_s(pred["total_s"]), *((fmt_s(vm["total"]["measured_s"]), "", "") if vm else ()),
              style="bold")
    items.append(t)
    types = {k: r for k, r in (vm or {}).get("by_layer_type", {}).items() if r["measured_s"]}
    if types:
        t = Table(title="roofline vs measured per layer type", title_justify="left")
        for col in ("layer type", "roofline", "measured", "error", "of peak"):
            t.add_column(col, justify="left" if col == "layer type" else "right")
        for name, r in sorted(types.items(), key=lambda kv: -kv[1]["measured_s"]):
            t.add_row(name, fmt_s(r["predicted_s"]), fmt_s(r["measured_s"]),
                      "" if r["error"] is None else f"{100 * r['error']:+.0f}%",
                      "" if r.get("fraction_of_peak") is None else f"{100 * r['fraction_of_peak']:.0f}%")
        items.append(t)
    if any("kernel_s" in r for r in stages.values() if r):
        items.append("GPU kernel-busy seconds per stage (roofline vs busy): " + ", ".join(
            f"{s} {fmt_s(r['kernel_s'])} ({100 * r['kernel_error']:+.0f}%)" for s, r in stages.items()
            if r and "kernel_s" in r and r["kernel_error"] is not None))
    if roof.get("caveat"):
        items.append(f"note: {roof['caveat']}")
    return items


def model_label(d: dict) -> str:
    """``name (title)``, or the title alone where it already starts with the name."""
    title = d.get("model_title") or ""
    return title if title.startswith(d["model"]) else f"{d['model']} ({title})"


def profile_items(d: dict) -> list:
    """A profile's terminal output: stage times (measured) or the analytic header, the cost account, the
    roofline (with --hardware), parameters, memory and where the files are."""
    items: list = []
    if d["mode"] == "analytic":
        items.append(f"analytic: {model_label(d)} {d['height']}x{d['width']}, batch {d['batch']}, "
                     f"{d['steps']} steps ({d['unet_evals']} denoiser evals), CFG {'on' if d['cfg'] else 'off'}, "
                     f"{d['dtype']} — meta device, nothing executed")
        items += account_items(d)
        if d.get("roofline"):
            items += roofline_items(d["roofline"])
        params = ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in d["params"].items())
        items.append(f"parameters: {params}")
        items.append(f"run folder: {d['run_dir']}")
        return items
    title = (f"{model_label(d)} {d['height']}x{d['width']}, batch {d['batch']}, "
             f"{d['steps']} steps, CFG {'on' if d['cfg'] else 'off'}, {d['device']} {d['dtype']}")
    if d.get("random_weights"):
        items.append(f"[bold yellow]random weights — {d['note']}[/]")
    t = Table(title=title, title_justify="left")
    t.add_column("stage")
    t.add_column("measured", justify="right")
    t.add_column("share", justify="right")
    proj = d.get("projection")
    if proj:
        t.add_column(f"projected, {proj['unet_evals_full']} denoiser evals", justify="right")
    total = d["stages"].get("total", 0.0) or 1.0
    for stage, secs in d["stages"].items():
        if stage == "total":
            continue
        row = [stage, fmt_s(secs), f"{100 * secs / total:.1f}%"]
        if proj:
            row.append(fmt_s(proj["stages"].get(stage, 0.0)))
        t.add_row(*row)
    row = ["total", fmt_s(d["stages"].get("total", 0.0)), "100.0%"]
    if proj:
        row.append(fmt_s(proj["total_s"]))
    t.add_row(*row, style="bold")
    items.append(t)
    if proj:
        items.append(f"measured {proj['unet_evals_measured']} of {proj['unet_evals_full']} denoiser evaluations; "
                     "the last column is a projection (per-step median x step count), not a measurement")
    params = ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in d["params"].items())
    items.append(f"parameters: {params}")
    items.append(f"peak memory: {fmt_bytes(d['peak_memory_bytes'])} ({d['peak_memory_kind']})")
    if "flops" in d:
        items += account_items(d)
    if d.get("compiled"):
        items += compiled_items(d)
    if d.get("roofline"):
        items += roofline_items(d["roofline"])
    image = f"  image: {d['image']}" if d.get("image") else ""
    items.append(f"run folder: {d['run_dir']}{image}")
    return items


def setting_label(ap: dict) -> str:
    """An ``--approx`` setting as written (``block=0.25+deepcache=3``)."""
    return ap.get("setting") or f"{ap['method']}={ap['value']:g}"


def _spread(stats: dict | None) -> str:
    """`` (median of 3, 1.2 s–1.4 s)`` for a repeated measurement; nothing for one run."""
    if not stats or stats.get("runs", 1) < 2:
        return ""
    return f" (median of {stats['runs']}, {fmt_s(stats['min'])}–{fmt_s(stats['max'])})"


def approx_summary_lines(ap: dict) -> list[str]:
    """``profile --approx`` in brief (terminal and report alike): what the setting saves against dense, net of its
    own cost, over which evaluations, and the seconds of both untraced runs."""
    lines = [f"{setting_label(ap)}: {100 * ap['attention_flops_saved']:.1f}% of denoiser attention FLOPs saved "
             f"({100 * ap['end_to_end_flops_saved']:.1f}% end to end), {100 * ap['kept_fraction']:.1f}% of "
             "attention entries kept; net of the method's own FLOPs"]
    if ap.get("coverage"):
        lines.append(f"accounted and timed over {ap['coverage']}")
    if ap.get("unet_seconds") is not None:
        dense = ap.get("dense_untraced_unet_seconds")
        mine = fmt_s(ap["unet_seconds"]) + _spread(ap.get("unet_seconds_stats"))
        lines.append(f"denoiser {mine} with it vs {fmt_s(dense)}{_spread(ap.get('dense_untraced_unet_seconds_stats'))}"
                     f" dense, both untraced, same noise (attention kernel: {ap.get('kernel', '?')})"
                     if dense is not None else f"denoiser {mine} untraced (attention kernel: {ap.get('kernel', '?')})")
    saved = {k: v for k, v in (ap.get("flops_saved_by_stage") or {}).items() if v}
    if saved:
        lines.append("FLOPs saved by stage: " + ", ".join(f"{k} {fmt_n(v)}" for k, v in saved.items()))
    extra = ap.get("method_overhead")
    if extra and extra["ops"]:
        lines.append(f"the method's own ops: {extra['ops']} ({fmt_n(extra['flops'])} FLOPs: "
                     + ", ".join(f"{k} x{v}" for k, v in extra["by_op"].items()) + ")")
    return lines


def approx_lines(ap: dict) -> list[str]:
    """``profile --approx``: :func:`approx_summary_lines`, then (reuse) which blocks ran, runs of equal steps
    together."""
    lines = approx_summary_lines(ap)
    for nums, s in step_kinds(ap.get("steps") or []):
        steps, each = fmt_steps(nums), "" if len(nums) == 1 else " each"
        part = s.get("partial") or []
        whole = [b for b in s["blocks"] if b not in part]
        lines.append(f"  {steps}: {fmt_n(s['flops'])} FLOPs{each}, ran {', '.join(whole) or 'no block in full'}"
                     + (f"; in part only (forecast or cached): {', '.join(part)}" if part else ""))
    return lines


def step_kinds(steps: list[dict]) -> list[tuple[list[int], dict]]:
    """Steps that ran the same blocks for the same FLOPs, together: (their step numbers, the first of them), in
    order of first appearance (DeepCache's 50 steps are two kinds, full and cached)."""
    kinds: dict[tuple, tuple[list[int], dict]] = {}
    for s in steps:
        key = (round(s["flops"]), tuple(s["blocks"]), tuple(s.get("partial") or ()))
        kinds.setdefault(key, ([], s))[0].append(s["step"])
    return list(kinds.values())


def fmt_steps(nums: list[int]) -> str:
    """``step 3``, ``steps 0–2``, ``steps 1, 3, …, 49 (every 2nd, 25 steps)``, ``steps 0, 4, 5 (3 steps)``."""
    if len(nums) == 1:
        return f"step {nums[0]}"
    gaps = {b - a for a, b in zip(nums, nums[1:], strict=False)}
    if gaps == {1}:
        return f"steps {nums[0]}–{nums[-1]}"
    if len(gaps) == 1 and len(nums) > 3:
        g = gaps.pop()
        nth = {2: "2nd", 3: "3rd"}.get(g, f"{g}th")
        return f"steps {nums[0]}, {nums[1]}, …, {nums[-1]} (every {nth}, {len(nums)} steps)"
    shown = ", ".join(map(str, nums[:8])) + (", …" if len(nums) > 8 else "")
    return f"steps {shown} ({len(nums)} steps)"


def compiled_rows(d: dict) -> list[tuple[str, float, float]]:
    """``--compile``: (name, eager s, compiled s) per stage, then per layer type of the compiled stages."""
    c = d["compiled"]
    compiled = set(c.get("compiled") or ())
    rows = [(f"stage {k}" + ("" if k in compiled else " (not compiled)"), v, d["stages"].get(k, 0.0))
            for k, v in c["eager"]["stages"].items() if k != "total"]
    rows.append(("stage total", c["eager"]["stages"].get("total", 0.0), d["stages"].get("total", 0.0)))
    by_type = (d.get("seconds") or {}).get("by_layer_type", {})
    if "kernels" in c:
        rows += [(t, c["eager"]["by_layer_type"].get(t, 0.0), by_type.get(t, 0.0))
                 for t in sorted(set(by_type) | set(c["eager"]["by_layer_type"]),
                                 key=lambda t: -c["eager"]["by_layer_type"].get(t, 0.0)) if t != "unattributed"]
    return rows


def compiled_items(d: dict) -> list:
    """``--compile``: eager vs compiled seconds side by side, compile time and how the kernels were attributed."""
    c = d["compiled"]
    t = Table(title=f"eager vs compiled ({c['backend']}; eager stages untraced, eager layer types from the trace)",
              title_justify="left")
    for col in ("stage / layer type", "eager", "compiled", "speedup"):
        t.add_column(col, justify="left" if col.startswith("stage") else "right")
    for name, e, k in compiled_rows(d):
        t.add_row(name, fmt_s(e), fmt_s(k), f"{e / k:.2f}x" if k > 0 else "—")
    items: list = [t, f"compile: {fmt_s(c['compile_s'])} in Inductor, first compiled run {fmt_s(c['first_call_s'])} "
                      "(not in the stage times)"]
    if "kernels" in c:
        items.append(f"compiled kernels: {c['kernels_matched']} of {c['kernels']} matched to Inductor's provenance; "
                     f"{fmt_s(c['kernel_s'])} kernel time, {fmt_s(c['unattributed_s'])} unattributed")
    else:
        items.append(f"per-op attribution: {c['attribution']}")
    return items


def presets_table(rows: list[dict]) -> Table:
    """``diffprobe hardware list``: one row per preset, its dense peaks, bandwidth and memory."""
    t = Table(title="hardware presets (dense peaks)", title_justify="left")
    for col in ("name", "title", "fp32 TFLOP/s", "fp16 TFLOP/s", "bf16 TFLOP/s", "bandwidth", "memory"):
        t.add_column(col, justify="left" if col in ("name", "title") else "right")
    for r in rows:
        if "peak_flops" not in r:
            t.add_row(r["name"], r["title"], "", "", "", "", "")
            continue
        p = r["peak_flops"]
        t.add_row(r["name"], r["title"], *(f"{p[d] / 1e12:.3g}" for d in ("float32", "float16", "bfloat16")),
                  f"{r['memory_bandwidth'] / 1e9:.4g} GB/s", f"{r['memory_bytes'] / 1e9:.3g} GB")
    return t


def preset_lines(d: dict) -> list[str]:
    """``diffprobe hardware show``: a preset's ceilings, ridge points and source."""
    lines = [f"{d['name']}: {d['title']} ({d['kind']})"]
    for dt, v in d["peak_flops"].items():
        lines.append(f"  peak {dt:9s} {v / 1e12:10.4g} TFLOP/s   ridge {v / d['memory_bandwidth']:8.1f} FLOP/byte")
    lines.append(f"  memory bandwidth {d['memory_bandwidth'] / 1e9:.4g} GB/s, memory {d['memory_bytes'] / 1e9:.3g} GB")
    lines.append(f"  source: {d['source']}")
    return lines


def bench_lines(r: dict) -> list[str]:
    """``diffprobe kernels bench``: the timings, speedups and the float64 check of one grid point."""
    lines = [f"{r['tokens']} tokens, {r['heads']} heads × {r['head_dim']}, batch {r['batch']}, {r['dtype']} on "
             f"{r['device']} ({r['device_name']}), blocks of {r['block_size']}, kept density {r['kept_density']:.3f}",
             f"dense SDPA ({r['dense_backend']}): dense_s {r['dense_s']:.6f}"]
    if "dense_default_s" in r:
        lines.append(f"dense SDPA (its own backend choice): {r['dense_default_s']:.6f}")
    lines.append(f"block-sparse ({r['backend']}): sparse_s {r['sparse_s']:.6f}  (first call {r['first_call_s']:.2f} "
                 f"s); kernel alone on a prepared layout: kernel_s {r['kernel_s']:.6f}")
    lines.append(f"speedup {r['speedup']:.2f}x, kernel alone {r['kernel_speedup']:.2f}x  "
                 f"(limit 1/density {r['limit']:.2f}x)")
    if r.get("above_limit_note"):
        lines.append(f"note: {r['above_limit_note']}")
    if "efficiency" in r:
        lines.append(f"efficiency (dense_s x kept density / sparse_s) {r['efficiency']:.2f}, kernel alone "
                     f"{r['kernel_efficiency']:.2f}; CPU {r['cpu_model']}, capability {r['cpu_capability']}")
    if "max_rel_error" in r:
        lines.append(f"max_rel_error {r['max_rel_error']:.2e} vs float64 masked reference ({r['checked_heads']} "
                     "heads)")
    return lines


def models_table(rows: list[dict]) -> Table:
    """``diffprobe models``: the embedded architectures with their parameter counts."""
    t = Table(title="embedded architectures (configs as published; weights random unless --weights, except the "
              "trained digits fixture)")
    short = {"CLIPTextModel": "CLIP", "CLIPTextModelWithProjection": "CLIP", "T5EncoderModel": "T5",
             "Gemma2Model": "Gemma2", "UNet2DConditionModel": "UNet"}
    for col in ("name", "native px", "denoiser", "params", "text encoders: params/tokens", "VAE", "total",
                "steps", "CFG"):
        t.add_column(col, justify="left" if col in ("name", "denoiser", "text encoders: params/tokens") else "right")
    for r in rows:
        encoders = " + ".join(f"{short.get(e['class'], e['class'])} {fmt_n(e['params'])}/{e['tokens']}"
                              + ("*" if e["tokenizer"] == "stand-in" else "") for e in r["text_encoders"])
        cls = r["denoiser_class"]
        t.add_row(r["name"], str(r["native_resolution"]), short.get(cls, cls.removesuffix("Model")),
                  fmt_n(r["params"][r["denoiser"]]), encoders, fmt_n(r["params"]["vae"]),
                  fmt_n(sum(r["params"].values())), str(r["steps"]),
                  f"{r['guidance']:g}" if r["cfg"] else "off (distilled)" if r["family"] == "flux" else "off")
    t.caption = ("tokens: the length every prompt is padded to; * a stand-in tokenizer (the real vocabulary ships "
                 "with no registry package; costs depend only on the length)")
    return t


def accel_gemm_lines(r: dict) -> list[str]:
    """``diffprobe accel gemm``: one GEMM's mapping, cycles, utilization and traffic."""
    return [f"GEMM ({r['m']} x {r['k']}) @ ({r['k']} x {r['n']}) on a {r['rows']}x{r['cols']} array, "
            f"{r['dataflow']} dataflow ({r['base_preset']}'s clock, buffers and energies)",
            f"  mapped {r['mapped_rows']} x {r['mapped_cols']} onto the array, {r['streamed']} streamed; "
            f"{plural(r['folds'], 'fold')} x {plural(r['cycles_per_fold'], 'cycle')}",
            f"  compute {r['compute_cycles']:.0f} cycles, memory {r['memory_cycles']:.0f} cycles -> {r['cycles']:.0f} "
            f"cycles ({fmt_s(r['latency_s'])}); utilization {100 * r['utilization']:.1f}%",
            f"  {fmt_n(r['macs'])} MACs; SRAM {fmt_bytes(r['sram_bytes'])}, DRAM {fmt_bytes(r['dram_bytes'])}; "
            f"energy {r['energy_j'] * 1e6:.3g} µJ"]


def accel_rows(r: dict) -> tuple[list[str], list[list]]:
    """Per design: latency, energy, utilization and speedups (the accel table, terminal and report)."""
    head = ["design", "skips", "latency", "energy", "array util", "DRAM", "vs dense", "vs GPU roofline"]
    if r["gpu"].get("measured_s"):
        head.append("vs measured GPU")
    rows = []
    for name, a in r["accel"].items():
        row = [name, a["granularity"], fmt_s(a["latency_s"]), f"{a['energy_j']:.3g} J",
               "" if a["utilization"] is None else f"{100 * a['utilization']:.0f}%", fmt_bytes(a["dram_bytes"]),
               f"{a['speedup_over_dense']:.2f}x", f"{a['speedup_over_gpu_roofline']:.2f}x"]
        if r["gpu"].get("measured_s"):
            row.append(f"{a.get('speedup_over_measured_gpu', 0):.2f}x")
        rows.append(row)
    return head, rows


def mask_lines(r: dict) -> list[str]:
    """With measured masks: where they come from and how much of self-attention each granularity keeps."""
    m = r.get("masks")
    if not m:
        return []
    elem = m["element_kept"]
    parts = [f"block {b}: {100 * k:.1f}%" + (f" ({m['block_over_element'][b]:.2f}x the element share)"
                                             if m["block_over_element"].get(b) else "")
             for b, k in m["block_kept"].items() if k is not None]
    lines = [f"masks: {m['dir']} at tau {m['tau']:g}; self-attention kept per key "
             + ("—" if elem is None else f"{100 * elem:.1f}%") + "; " + ", ".join(parts)]
    if m.get("truncated"):
        lines.append("note: the mask store hit its size budget; calls past it reuse the nearest stored step")
    return lines


def accel_items(r: dict) -> list:
    """``diffprobe accel RUN``: the designs side by side, then each design's latency by layer type."""
    items: list = []
    head, rows = accel_rows(r)
    evals = (f"{r['unet_evals_measured']} of {r['unet_evals']} denoiser evaluations measured"
             if r.get("mode") == "measured" and r.get("unet_evals_measured") is not None
             and r["unet_evals_measured"] < (r.get("unet_evals") or 0) else f"{r['mode']} run")
    t = Table(title=f"accelerators: {r['model']} {r['height']}x{r['width']}, {r['steps']} steps ({evals}); "
              f"GPU roofline {r['gpu']['preset']} {fmt_s(r['gpu']['roofline_s'])}", title_justify="left")
    for col in head:
        t.add_column(col, justify="left" if col in ("design", "skips") else "right")
    for row in rows:
        t.add_row(*row)
    items.append(t)
    if r.get("density_note"):
        items.append(f"note: {r['density_note']}")
    items += mask_lines(r)
    names = list(r["accel"])
    types = sorted({lt for a in r["accel"].values() for lt in a["by_layer_type"]},
                   key=lambda lt: -r["accel"][names[0]]["by_layer_type"].get(lt, {}).get("latency_s", 0.0))
    t = Table(title="latency by layer type", title_justify="left")
    t.add_column("layer type")
    for n in names:
        t.add_column(n, justify="right")
    for lt in types:
        vals = [r["accel"][n]["by_layer_type"].get(lt, {}).get("latency_s", 0.0) for n in names]
        if any(vals):
            t.add_row(lt, *(fmt_s(v) for v in vals))
    items.append(t)
    return items
