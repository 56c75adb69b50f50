"""``report.html``: one self-contained page per run folder (figures inlined as data URIs, no script, no
external URL), readable offline. Figures are also written to ``figures/`` as PNG (and SVG for the scaling plots).

Every user-supplied string (prompt, model path, labels) goes through :func:`html.escape`.
"""

from __future__ import annotations

from pathlib import Path

from diffprobe.analyses import roofline
from diffprobe.analyses.sweep import current_findings
from diffprobe.errors import DiffprobeError
from diffprobe.hardware.presets import from_dict, get_preset
from diffprobe.records.runfolder import read_ops_checked, read_result
from diffprobe.report import figures as figs
from diffprobe.report.compare import compare_report
from diffprobe.report.findings import (
    LABEL,
    approx_findings,
    eps_tau,
    profile_findings,
    share_classes,
    sparsity_headline,
    sweep_findings,
)
from diffprobe.report.page import Page, esc, table
from diffprobe.report.text import (
    accel_rows,
    approx_columns,
    approx_rows,
    approx_summary_lines,
    compiled_items,
    compiled_rows,
    mask_lines,
    setting_label,
    sparsity_rows,
)
from diffprobe.report.units import fmt_k, fmt_n, fmt_s


def build_report(folder: str | Path) -> Path:
    """(Re)build ``report.html`` for a profile, sweep or compare folder; returns its path."""
    folder = Path(folder)
    kind, data = read_result(folder)
    if kind == "sweep":
        return _sweep_report(folder, {**data, "findings": current_findings(folder, data)})
    if kind == "compare":
        return compare_report(folder, data)
    if kind == "sparsity":
        return _sparsity_report(folder, data)
    if kind == "approx":
        return _approx_report(folder, data)
    return _profile_report(folder, data)


def _config_rows(d: dict) -> list[list]:
    keys = ("model", "model_title", "weights", "prompt", "height", "width", "steps", "unet_evals",
            "unet_evals_measured", "batch", "guidance", "seed", "device", "dtype", "mode", "repeat", "warmup",
            "status")
    return [[k, d.get(k)] for k in keys if k in d]


def random_banner(page: Page, d: dict) -> None:
    if d.get("mode") == "analytic" and d.get("kind", "profile") == "profile":
        page.banner("Analytic run: counted on the meta device, with no weights and no compute. FLOPs and bytes are "
                    "exact counts of what the pipeline executes; nothing was timed and no image was drawn.")
    elif d.get("random_weights"):
        page.banner("Random weights: timings and FLOPs are real; the image content and any attention sparsity "
                    "are not (load real weights with --weights for those).")


def _profile_report(folder: Path, d: dict) -> Path:
    ops = read_ops_checked(folder)
    page = Page(folder, f"diffprobe profile — {d.get('model_title', d.get('model'))}",
                f"{d.get('height')}×{d.get('width')} px, batch {d.get('batch')}, {d.get('steps')} steps, "
                f"{d.get('mode')} on {d.get('device')} ({d.get('dtype')})")
    random_banner(page, d)
    if d.get("status") != "ok":
        page.banner(f"This run failed: {d.get('error')}. What was measured before the failure is shown.", fail=True)
    page.findings(profile_findings(d, ops))
    page.h2("Configuration")
    page.add(table(["setting", "value"], _config_rows(d)))
    stages = d.get("stages") or {}
    if stages:
        page.h2("Measured time by stage")
        total = stages.get("total") or 1
        proj = d.get("projection")
        headers = ["stage", "seconds", "share"] + ([f"projected, {proj['unet_evals_full']} evals"] if proj else [])
        rows = []
        for s, v in stages.items():
            row = [s, fmt_s(v), f"{100 * v / total:.1f}%"]
            if proj:
                row.append(fmt_s(proj["total_s"] if s == "total" else proj["stages"].get(s, 0.0)))
            rows.append(row)
        page.add(table(headers, rows))
    if d.get("flops"):
        page.h2("Cost account by layer type")
        f, b, sec = d["flops"], d["bytes"], d.get("seconds")
        names = sorted(set(f["by_layer_type"]) | set((sec or {}).get("by_layer_type", {})),
                       key=lambda k: -f["by_layer_type"].get(k, 0))
        share = {lt: 100 * v / (f["total"] or 1) for lt, v in f["by_layer_type"].items()}
        ap = d.get("approx")
        extra = approx_columns(d)
        for _, by_type, _ in extra:
            names += [k for k in by_type if k not in names]  # attn_predictor: work only the approximation does
        rows = [[lt, fmt_n(f["by_layer_type"].get(lt, 0)), f"{share.get(lt, 0):.1f}%",
                 fmt_n(b["by_layer_type"].get(lt, 0), "B")]
                + ([fmt_s(sec["by_layer_type"].get(lt, 0.0))] if sec else [])
                + [fmt_n(by_type.get(lt, 0)) for _, by_type, _ in extra] for lt in names]
        rows.append(["total", fmt_n(f["total"]), "100.0%", fmt_n(b["total"], "B")]
                    + ([fmt_s(sec["total"])] if sec else []) + [fmt_n(tot) for _, _, tot in extra])
        page.add(table(["layer type", "FLOPs", "share", "bytes"] + (["seconds"] if sec else [])
                       + [header for header, _, _ in extra], rows))
        if ap:
            page.add(f"<p>{esc(approx_sentence(ap))}</p>")
        page.figure(figs.stage_layer_bars(d), "stage_layer_types", "FLOPs (and measured time) by stage, stacked by "
                    "layer type")
    if d.get("compiled"):
        c = d["compiled"]
        page.h2(f"Eager vs compiled ({c['backend']})")
        page.add(table(["stage / layer type", "eager", "compiled", "speedup"],
                       [[n, fmt_s(e), fmt_s(k), f"{e / k:.2f}×" if k > 0 else "—"] for n, e, k in compiled_rows(d)]))
        source = c["eager"].get("by_layer_type_source") or "no op tracing"
        page.add(f"<p>{esc('; '.join(str(x) for x in compiled_items(d)[1:]))}. Eager stage times come from an "
                 f"untraced eager run; eager layer-type times from the traced run ({esc(source)}); compiled "
                 "per-layer times are the compiled kernels' times attributed through Inductor's provenance, split "
                 "by bytes where one kernel covers several records.</p>")
    page.figure(figs.step_timeline(d), "steps", "measured seconds (or FLOPs) per denoiser evaluation")
    if d.get("roofline") and ops is not None and len(ops):
        _roofline_section(page, d["roofline"], ops, "roofline")
    accel_path = folder / "accel.json"
    if accel_path.exists():
        _accel_section(page, folder)
    image = d.get("image")
    if image and (folder / image).exists():
        page.h2("Generated image")
        note = " (random weights: noise-like by design)" if d.get("random_weights") else ""
        width = min(512, d.get("width") or 512)
        page.image((folder / image).read_bytes(), f"{image}{note}", width=width)
        ap_image = (d.get("approx") or {}).get("image")
        if ap_image and (folder / ap_image).exists():
            ap = d["approx"]
            page.image((folder / ap_image).read_bytes(), f"{ap_image}: the same run with "
                       f"{setting_label(ap)}", width=width)
    if d.get("environment"):
        page.h2("Environment")
        page.add(table(["", ""], [[k, v] for k, v in d["environment"].items()]))
    return page.write()


def _accel_section(page: Page, folder: Path) -> None:
    """``diffprobe accel``'s account of this run (accel.json): designs side by side, and the figure."""
    import json

    try:
        acc = json.loads((folder / "accel.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DiffprobeError(f"{folder / 'accel.json'} is unreadable: {exc}") from exc
    page.h2("Accelerator designs")
    for w in acc.get("warnings", []):
        page.banner(w, fail=True)
    page.add(table(*accel_rows(acc)))
    note = acc.get("density_note") or " ".join(mask_lines(acc)) or "attention as the run computed it"
    page.add(f"<p>{esc(note)}. Speedups against each design's dense counterpart and against the "
             f"{esc(acc['gpu']['preset'])} roofline ({fmt_s(acc['gpu']['roofline_s'])}); the model and every "
             "preset's sources are in docs/accelerator.md.</p>")
    page.figure(figs.accel_figure(acc), "accel", "latency by layer type and energy by component, per design")


def approx_sentence(ap: dict) -> str:
    """The approximate pass of ``profile --approx`` in one sentence (as the terminal table says it)."""
    return "; ".join(approx_summary_lines(ap)) + f". {ap.get('note', '')}"


def _roofline_section(page: Page, roof: dict, ops, name: str) -> None:
    page.h2(f"Roofline on {roof['preset']}")
    if roof.get("caveat"):
        page.banner(roof["caveat"].capitalize() + ".")
    try:  # the definition stored with the run: rebuilding a report never measures or reads presets again
        preset = (from_dict(roof["preset_definition"], f"{roof['preset']} (stored in run.json)")
                  if "preset_definition" in roof else get_preset(roof["preset"]))
    except DiffprobeError as exc:
        page.banner(f"preset unavailable for the figure: {exc}")
        return
    vm = roof.get("versus_measured")
    if vm:
        rows = [[k, fmt_s(v["predicted_s"]), fmt_s(v["measured_s"]),
                 f"{100 * v['error']:+.0f}%" if v["error"] is not None else "",
                 f"{100 * v['fraction_of_peak']:.0f}%" if v.get("fraction_of_peak") is not None else ""]
                for k, v in {**vm["by_stage"], **{f"· {t}": r for t, r in vm["by_layer_type"].items()}}.items()]
        page.add(table(["stage / · layer type", "roofline", "measured", "error", "of peak"], rows))
    page.figure(figs.roofline_figure(roofline.op_roofline(ops, preset), preset, f"layer types on {preset.title}"),
                name, "filled: roofline-attainable FLOP/s at each layer type's intensity; hollow: achieved "
                "(measured runs)")


def _sweep_report(folder: Path, state: dict) -> Path:
    f = state.get("findings") or {}
    pts = sorted(f.get("points") or [], key=lambda p: (p["batch"], p["side"]))
    cfg = state.get("config", {})
    page = Page(folder, f"diffprobe sweep — {state.get('model')}",
                f"{len(pts)} points, {cfg.get('steps')} steps, {state.get('mode')}, {cfg.get('dtype')}")
    if state.get("complete") is False:
        page.banner(f"This sweep did not finish: the findings below come from the {len(pts)} points it completed; "
                    "re-run the same command to resume it.")
    if state.get("mode") == "analytic":
        page.banner("Analytic sweep: every point counted on the meta device, with no weights and no compute: FLOPs "
                    "and bytes are exact; nothing was timed.")
    elif state.get("random_weights"):
        page.banner("Random weights: FLOPs and timings are real; image content and sparsity are not.")
    for p in (state.get("points") or {}).values():
        if p.get("status") in ("failed", "skipped"):
            page.banner(p.get("message", ""), fail=p.get("status") == "failed")
    page.findings(sweep_findings(state))
    if pts:
        page.h2("Points")
        rows = []
        classes = share_classes(f)  # a UNet's layer classes, or a diffusion transformer's
        for p in pts:
            u = p["flops"]["denoiser"]
            tot = u["total"] or 1
            rows.append([p["name"], p["tokens"], fmt_n(u["total"]),
                         *(f"{100 * u.get(c, 0) / tot:.1f}%" for c in classes),
                         fmt_n(p["attention_memory"]["materialized_bytes"], "B"),
                         fmt_n(p["attention_memory"]["fused_bytes"], "B")])
        page.add(table(["point", "tokens", "denoiser FLOPs", *(LABEL.get(c, c) for c in classes),
                        "scores (unfused)", "fused"], rows))
        fits = f.get("exponents", {})
        if fits.get("flops"):
            page.h2("Scaling exponents (cost ∝ side^k)")
            rows = [[c, fmt_k(v["k"]), f"{v['rms_log_residual']:.3f}"]
                    + ([fmt_k(fits["seconds"][c]["k"]) if fits.get("seconds", {}).get(c) else ""]
                       if "seconds" in fits else [])
                    for c, v in sorted(fits["flops"].items(), key=lambda kv: -(kv[1] or {"k": 0})["k"]) if v]
            page.add(table(["denoiser layer class", "k (FLOPs)", "residual"] + (["k (seconds)"] if "seconds" in fits
                                                                            else []), rows))
        page.figure(figs.share_area(f, "flops"), "shares_flops", "denoiser FLOP shares vs image side", svg=True)
        page.figure(figs.share_area(f, "seconds"), "shares_seconds", "denoiser measured-time shares vs image side",
                    svg=True)
        page.figure(figs.loglog(f, "flops"), "scaling_flops", "denoiser FLOPs vs side, log-log, with fitted "
                    "exponents", svg=True)
        page.figure(figs.loglog(f, "seconds"), "scaling_seconds", "denoiser measured op time vs side, log-log",
                    svg=True)
        last = pts[-1]
        if last.get("roofline"):
            ops = read_ops_checked(folder / "points" / last["name"])
            if ops is not None:
                _roofline_section(page, last["roofline"], ops, "roofline_largest")
        if last.get("bottlenecks"):
            page.h2(f"Largest denoiser costs at {last['name']}")
            page.add(table(["level", "tokens", "layer class", "FLOPs", "share"],
                           [[b["level"], b["tokens"], b["layer_class"], fmt_n(b["flops"]), f"{100 * b['share']:.1f}%"]
                            for b in last["bottlenecks"]]))
    return page.write()


def _sparsity_report(folder: Path, state: dict) -> Path:
    import pandas as pd

    path = folder / "sparsity.parquet"
    try:
        stats = pd.read_parquet(path)
    except Exception as exc:  # a missing or damaged table: one clear message
        raise DiffprobeError(f"{path} is unreadable: {type(exc).__name__}: {exc}") from exc
    page = Page(folder, f"diffprobe sparsity — {state.get('model')}",
                f"{len(state.get('points', []))} resolution(s), {state.get('steps')} steps, prompt "
                f"{state.get('prompt')!r}")
    if state.get("random_weights"):
        page.banner(state.get("note") or "random weights: sparsity figures mean nothing for a trained model")
    if not state.get("complete", True):
        page.banner("This sparsity run did not finish: the figures show the last complete summary. Run the same "
                    "command again to finish it.", fail=True)
    page.findings(sparsity_headline(state))
    if state.get("summary"):
        page.h2("Mean statistics (over heads, steps and layers)")
        page.add(table(*sparsity_rows(state)))
    e, t = eps_tau(state)
    for (h, w), g in stats.groupby(["height", "width"], sort=False):
        page.h2(f"{h}×{w} px")
        for kind, gk in g.groupby("attn_kind", sort=False):
            page.figure(figs.sparsity_heatmap(gk, f"below_{e:g}", f"{kind}-attention: share of probabilities "
                                              f"< {e:g} (layer × step)"), f"heatmap_{h}x{w}_{kind}",
                        f"{kind}-attention, fraction of probabilities below {e:g}, mean over heads")
        page.figure(figs.sparsity_histogram(g, f"keys_frac_{t:g}", f"fraction of keys covering {t:g} of a row's "
                                            "mass"), f"hist_{h}x{w}", "distribution over layers, heads and steps")
        point = next((p for p in state.get("points", []) if p["height"] == h and p["width"] == w), None)
        if point and point.get("image") and (folder / point["dir"] / point["image"]).exists():
            page.image((folder / point["dir"] / point["image"]).read_bytes(), f"generated image at {h}×{w}",
                       width=max(128, min(512, w * 4)))
    return page.write()


def _approx_report(folder: Path, state: dict) -> Path:
    page = Page(folder, f"diffprobe approx — {state.get('model')}",
                f"{state.get('height')}×{state.get('width')} px, {state.get('steps')} steps, "
                f"{len(state.get('prompts', []))} image(s), renormalize={state.get('renormalize')}")
    if state.get("random_weights"):
        page.banner("Random weights: attention is near-uniform, so these savings and quality figures say nothing "
                    "about a trained model; use --model digits or --weights.")
    page.findings(approx_findings(state))
    page.h2("Trade-off")
    page.add(table(*approx_rows(state)))
    for note in state.get("notes", []):
        page.add(f"<p>{esc(note)}</p>")
    page.figure(figs.tradeoff(state["results"]), "tradeoff", "attention FLOPs saved vs quality, per method",
                svg=True)
    page.figure(figs.pareto(state["results"]), "pareto", "every setting (attention, reuse and both): FLOPs and "
                "seconds saved against quality, with the Pareto front; numbered points, named in the key"
                + ("; bars: the min–max of the repeated runs" if (state.get("repeat") or 1) > 1 else ""), svg=True)
    page.h2("Images: dense and approximate (same noise)")
    for r in state["results"]:
        path = folder / r["image"]
        if path.exists():
            label = "dense" if r["method"] == "dense" else (r.get("setting")
                                                              or f"{r['method']} {r['param']}={r['value']:g}")
            page.image(path.read_bytes(), label, width=min(960, 64 * min(10, len(state.get("prompts", [1])))))
    return page.write()
