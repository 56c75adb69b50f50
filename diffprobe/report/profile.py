"""The sections of a profile run (``run.json``), for the terminal and ``report.html`` alike."""

from __future__ import annotations

from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.records.documents import AccelDocument, RunDocument, read_document
from diffprobe.report import figures as figs
from diffprobe.report.sections import Figure, Image, Section, build
from diffprobe.units import fmt_bytes, fmt_n, fmt_s, size_words


def model_label(d: RunDocument) -> str:
    """``name (title)``, or the title alone where it already starts with the name."""
    title = d.model_title or ""
    return title if title.startswith(d.model) else f"{d.model} ({title})"


def cfg_words(d: RunDocument) -> str:
    """``CFG on`` / ``CFG off``, saying where the branches run as two denoiser calls per step."""
    if d.cfg and (d.denoiser_calls_per_step or 1) > 1:
        return f"CFG on ({d.denoiser_calls_per_step} denoiser calls per step)"
    return f"CFG {'on' if d.cfg else 'off'}"


def headline(d: RunDocument) -> list[str]:
    """The run in one line (and a random-weights warning): what the terminal prints above the sections."""
    if d.mode == "analytic":
        return [f"analytic: {model_label(d)} {size_words(d)}, batch {d.batch}, {d.steps} steps "
                f"({d.denoiser_evals} denoiser evals), {cfg_words(d)}, {d.dtype} — meta device, nothing executed"]
    lines = [f"{model_label(d)} {size_words(d)}, batch {d.batch}, {d.steps} steps, {cfg_words(d)}, "
             f"{d.device} {d.dtype}"]
    if d.random_weights:
        lines.insert(0, f"random weights — {d.note}")
    return lines


CONFIG_KEYS = ("model", "model_title", "weights", "prompt", "height", "width", "frames", "latent_frames", "tokens",
               "steps", "scheduler", "denoiser_evals", "denoiser_evals_measured", "denoiser_calls_per_step", "batch",
               "guidance", "seed", "device", "dtype", "mode", "repeat", "warmup", "status")
VIDEO_KEYS = ("frames", "latent_frames")  # shown for a video only


def configuration(d: RunDocument, folder: Path) -> Section:
    return Section("Configuration", ["setting", "value"], [[k, str(getattr(d, k))] for k in CONFIG_KEYS
                                                           if k not in VIDEO_KEYS or getattr(d, k) is not None],
                   left=2, page_only=True)


def findings(d: RunDocument, folder: Path) -> Section:
    return Section("Findings", notes=list(d.findings or []))


def stages(d: RunDocument, folder: Path) -> Section | None:
    st = d.stages or {}
    if not st:
        return None
    proj = d.projection
    total = st.get("total", 0.0) or 1.0
    headers = ["stage", "seconds", "share"] + (
        [f"projected, {proj['denoiser_evals_full']} denoiser evals"] if proj else [])
    rows = []
    for stage, secs in [*((k, v) for k, v in st.items() if k != "total"), ("total", st.get("total", 0.0))]:
        row = [stage, fmt_s(secs), f"{100 * secs / total:.1f}%"]
        if proj:
            row.append(fmt_s(proj["total_s"] if stage == "total" else proj["stages"].get(stage, 0.0)))
        rows.append(row)
    notes = []
    if proj:
        notes.append(f"measured {proj['denoiser_evals_measured']} of {proj['denoiser_evals_full']} denoiser "
                     "evaluations; the last column is a projection (per-step median x step count), not a measurement")
    return Section("Measured time by stage", headers, rows, notes, total=True)


def parameters(d: RunDocument, folder: Path) -> Section:
    notes = ["parameters: " + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in d.params.items())]
    if d.mode != "analytic":
        notes.append(f"peak memory: {fmt_bytes(d.peak_memory_bytes)} ({d.peak_memory_kind})")
    return Section("Parameters and memory", notes=notes)


def setting_label(ap: dict) -> str:
    """An ``--approx`` setting as written (``block=0.25+deepcache=3``)."""
    return ap.get("setting") or f"{ap['method']}={ap['value']:g}"


def approx_columns(d: RunDocument) -> list[tuple[str, dict, float]]:
    """The ``--approx`` columns of the cost account, as (header, FLOPs by layer type, total): the setting's, and
    before it the dense run's over the same evaluations where those are not the profile's own (a reuse method's
    account covers every step while the profile sampled some) — a column never compares other steps than its
    neighbour's."""
    ap = d.approx
    if not ap:
        return []
    n = ap.get("denoiser_evals_accounted")
    if n is None or n == d.denoiser_evals_measured or "dense_flops_by_layer_type" not in ap:
        return [(f"FLOPs, {setting_label(ap)}", ap["flops_by_layer_type"], ap["flops_total"])]
    return [(f"dense FLOPs, all {n} evals", ap["dense_flops_by_layer_type"], ap["dense_flops_total"]),
            (f"FLOPs, {setting_label(ap)}, all {n} evals", ap["flops_by_layer_type"], ap["flops_total"])]


def account(d: RunDocument, folder: Path) -> Section | None:
    """FLOPs, bytes and (measured) seconds per layer type, the denoiser column beside the whole run."""
    if not d.flops:
        return None
    flops, nbytes, secs = d.flops, d.bytes, d.seconds
    extra = approx_columns(d)
    headers = ["layer type", "FLOPs", "share", "denoiser FLOPs", "bytes"] + (["seconds"] if secs else []) + [
        h for h, _, _ in extra]
    unet = flops["by_stage_layer_type"].get("denoiser", {})
    total = flops["total"] or 1
    names = sorted(flops["by_layer_type"], key=lambda k: -flops["by_layer_type"][k])
    names += [k for k in (secs or {}).get("by_layer_type", {}) if k not in names]
    names += [k for _, by_type, _ in extra for k in by_type if k not in names]  # attn_predictor: the method's own
    rows = []
    for lt in names:
        f = flops["by_layer_type"].get(lt, 0)
        row = [lt, fmt_n(f) if lt in flops["by_layer_type"] else "", f"{100 * f / total:.1f}%" if f else "",
               fmt_n(unet.get(lt, 0)) if lt in flops["by_layer_type"] else "",
               fmt_n(nbytes["by_layer_type"].get(lt, 0), "B") if lt in flops["by_layer_type"] else ""]
        s = (secs or {}).get("by_layer_type", {}).get(lt, 0.0)
        row += [fmt_s(s) if lt in secs["by_layer_type"] else ""] if secs else []
        row += [fmt_n(by_type.get(lt, 0.0)) for _, by_type, _ in extra]
        if f or s > 0 or nbytes["by_layer_type"].get(lt, 0) or any(by_type.get(lt) for _, by_type, _ in extra):
            rows.append(row)
    rows.append(["total", fmt_n(flops["total"]), "100.0%", fmt_n(sum(unet.values())), fmt_n(nbytes["total"], "B")]
                + ([fmt_s(secs["total"])] if secs else []) + [fmt_n(tot) for _, _, tot in extra])
    notes = approx_lines(d.approx) if d.approx else []
    ratios = (secs or {}).get("op_time_ratio") or {}
    if ratios:
        notes.append("seconds: operator times from another (profiled) run, scaled down to their stage times: "
                     + ", ".join(f"{stage} /{r:.2f}" for stage, r in ratios.items()) + "; nothing subtracted")
    lit = sum(d.macs_conv_linear.values())
    notes.append(f"literature convention (conv + linear multiply-adds only): {fmt_n(lit)} MACs = "
                 f"{100 * 2 * lit / total:.1f}% of the complete FLOP count"
                 + (f" (the traced dense run: {d.denoiser_evals_measured} denoiser evaluations)" if d.approx else ""))
    if d.projection and "flops_total" in d.projection:
        notes.append(f"full-run FLOPs (projection, {d.projection['denoiser_evals_full']} denoiser evals): "
                     f"{fmt_n(d.projection['flops_total'])}")
    fig = Figure("stage_layer_types", "FLOPs (and measured time) by stage, stacked by layer type",
                 lambda: figs.stage_layer_bars(d))
    return Section("Cost account by layer type (whole run as traced; denoiser column: all its evaluations)",
                   headers, rows, notes, [fig], total=True)


def _spread(stats: dict | None) -> str:
    """`` (median of 3, 1.2 s–1.4 s)`` for a repeated measurement; nothing for one run."""
    if not stats or stats.get("runs", 1) < 2:
        return ""
    return f" (median of {stats['runs']}, {fmt_s(stats['min'])}–{fmt_s(stats['max'])})"


def approx_summary_lines(ap: dict) -> list[str]:
    """``profile --approx`` in brief: what the setting saves against dense, net of its own cost, over which
    evaluations, and the seconds of both untraced runs."""
    lines = [f"{setting_label(ap)}: {100 * ap['denoiser_share_saved']:.1f}% of the denoiser's FLOPs saved "
             f"({100 * ap['attention_share_saved']:.1f}% of its attention core's, "
             f"{100 * ap['end_to_end_share_saved']:.1f}% end to end), {100 * ap['kept_fraction']:.1f}% of "
             "attention entries kept; net of the method's own FLOPs"]
    if ap.get("coverage"):
        lines.append(f"accounted and timed over {ap['coverage']}")
    if ap.get("interrupted"):
        lines.append(ap["interrupted"])
    if ap.get("denoiser_seconds") is not None:
        dense = ap.get("dense_untraced_denoiser_seconds")
        mine = fmt_s(ap["denoiser_seconds"]) + _spread(ap.get("denoiser_seconds_stats"))
        spread = _spread(ap.get("dense_untraced_denoiser_seconds_stats"))
        lines.append(f"denoiser {mine} with it vs {fmt_s(dense)}{spread} dense, both untraced, same noise "
                     f"(attention kernel: {ap.get('kernel', '?')})"
                     if dense is not None else f"denoiser {mine} untraced (attention kernel: {ap.get('kernel', '?')})")
    lines += predicted_lines(ap.get("predicted"))
    saved = {k: v for k, v in (ap.get("flops_saved_by_stage") or {}).items() if v}
    if saved:
        lines.append("FLOPs saved by stage: " + ", ".join(f"{k} {fmt_n(v)}" for k, v in saved.items()))
    mine, dense = ap.get("per_image_and_eval"), ap.get("dense_per_image_and_eval")
    if mine and dense:  # the literature's conventions, the setting's beside dense's
        macs, dmacs = sum(ap["macs_conv_linear"].values()), sum(ap["dense_macs_conv_linear"].values())
        lines.append(f"literature convention (conv + linear MACs): {fmt_n(macs)}MACs with it vs {fmt_n(dmacs)}MACs "
                     f"dense ({100 * (1 - macs / dmacs) if dmacs else 0:.1f}% fewer); per image and denoiser "
                     f"evaluation (CFG branches included): {fmt_n(mine['flops'])}FLOPs and "
                     f"{fmt_n(mine['macs_conv_linear'])}MACs vs "
                     f"{fmt_n(dense['flops'])}FLOPs and {fmt_n(dense['macs_conv_linear'])}MACs over "
                     f"{mine['evals']} evaluations; its records: {ap.get('records', 'not stored')}")
    extra = ap.get("method_overhead")
    if extra and extra["ops"]:
        lines.append(f"the method's own ops: {extra['ops']} ({fmt_n(extra['flops'])} FLOPs: "
                     + ", ".join(f"{k} x{v}" for k, v in extra["by_op"].items()) + ")")
    if ap.get("note"):
        lines.append(ap["note"])
    return lines


def predicted_lines(p: dict | None) -> list[str]:
    """The setting's denoiser as the calibrated model predicts it, beside dense's, each with its error against the
    untraced measurement; the re-priced attention calls; what is not priced."""
    if not p:
        return []
    vs = p.get("versus_measured") or {}

    def err(key: str) -> str:
        e = (vs.get(key) or {}).get("error")
        return f" ({e:+.1%} vs measured)" if e is not None else ""

    lines = [f"predicted by {p['preset']}: denoiser {fmt_s(p['denoiser_s'])}{err('denoiser')} with it vs "
             f"{fmt_s(p['dense_denoiser_s'])}{err('dense_denoiser')} dense, untraced"]
    a = p.get("attention")
    if a and (a["kernel_calls"] or a["index_calls"]):
        index = (f", plus the block index (predictor and layout) of {a['index_calls']} calls, {fmt_s(a['index_s'])}"
                 if a["index_calls"] else "")
        if a.get("copies"):
            index += (f", plus {a['copies']} copies of Q, K, V and outputs dense SDPA does not make, "
                      f"{fmt_s(a['copies_s'])}")
        lines.append(f"predicted attention with it: {a['kernel_calls']} of {a['calls']} calls on the block-sparse "
                     f"kernel, {fmt_s(a['kernel_s'])} where dense SDPA would take {fmt_s(a['dense_s'])}{index}")
    lines += [f"prediction note: {n}" for n in p.get("notes", [])]
    return lines


def approx_lines(ap: dict) -> list[str]:
    """:func:`approx_summary_lines`, then (reuse) which blocks ran, runs of equal steps together."""
    lines = approx_summary_lines(ap)
    for nums, s in step_kinds(ap.get("steps") or []):
        steps, each = fmt_steps(nums), "" if len(nums) == 1 else " each"
        part = s.get("partial") or []
        whole = [b for b in s["blocks"] if b not in part]
        ran = s.get("partial_ran") or {}
        named = [f"{b} ({', '.join(ran[b])})" if ran.get(b) else b for b in part]
        lines.append(f"  {steps}: {fmt_n(s['flops'])} FLOPs{each}, ran {', '.join(whole) or 'no block in full'}"
                     + (f"; in part only (forecast or cached; the layers that ran): {', '.join(named)}"
                        if part else ""))
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


def compiled_rows(d: RunDocument) -> list[tuple[str, float, float]]:
    """``--compile``: (name, eager s, compiled s) per stage, then per layer type of the compiled stages."""
    c = d.compiled
    compiled = set(c.get("compiled") or ())
    rows = [(f"stage {k}" + ("" if k in compiled else " (not compiled)"), v, d.stages.get(k, 0.0))
            for k, v in c["eager"]["stages"].items() if k != "total"]
    rows.append(("stage total", c["eager"]["stages"].get("total", 0.0), d.stages.get("total", 0.0)))
    by_type = (d.seconds or {}).get("by_layer_type", {})
    if "kernels" in c:
        rows += [(t, c["eager"]["by_layer_type"].get(t, 0.0), by_type.get(t, 0.0))
                 for t in sorted(set(by_type) | set(c["eager"]["by_layer_type"]),
                                 key=lambda t: -c["eager"]["by_layer_type"].get(t, 0.0)) if t != "unattributed"]
    return rows


def compiled(d: RunDocument, folder: Path) -> Section | None:
    """``--compile``: eager vs compiled seconds side by side, compile time and how the kernels were attributed."""
    c = d.compiled
    if not c:
        return None
    rows = [[name, fmt_s(e), fmt_s(k), f"{e / k:.2f}x" if k > 0 else "—"] for name, e, k in compiled_rows(d)]
    notes = [f"compile: {fmt_s(c['compile_s'])} in Inductor, first compiled run {fmt_s(c['first_call_s'])} (not in "
             "the stage times)"]
    if "kernels" in c:
        notes.append(f"compiled kernels: {c['kernels_matched']} of {c['kernels']} matched to Inductor's provenance; "
                     f"{fmt_s(c['kernel_s'])} kernel time, {fmt_s(c['unattributed_s'])} unattributed")
    else:
        notes.append(f"per-op attribution: {c['attribution']}")
    source = c["eager"].get("by_layer_type_source") or "no op tracing"
    notes.append(f"eager stage times come from an untraced eager run; eager layer-type times from the traced run "
                 f"({source}); compiled per-layer times are the compiled kernels' times attributed through Inductor's "
                 "provenance, split by bytes where one kernel covers several records")
    return Section(f"Eager vs compiled ({c['backend']})", ["stage / layer type", "eager", "compiled", "speedup"],
                   rows, notes)


def steps(d: RunDocument, folder: Path) -> Section:
    return Section("Per denoiser evaluation", figures=[
        Figure("steps", "measured seconds (or FLOPs) per denoiser evaluation", lambda: figs.step_timeline(d))])


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:+.0f}%"


def _of_peak(r: dict) -> str:
    return "" if r.get("fraction_of_peak") is None else f"{100 * r['fraction_of_peak']:.0f}%"


def roofline(d: RunDocument, folder: Path) -> list[Section] | None:
    """Roofline-predicted seconds per stage, beside the measured ones in a measured run; per layer type; the figure
    of the layer types on the preset's roofline (from the run's records)."""
    return roofline_sections(d.roofline, folder, d.machine_speed)


def _calibration_notes(cal: dict, speed: dict | None) -> list[str]:
    """What a calibrated prediction rests on: the machine and date of its curves, a caveat (another machine), and
    the machine's speed around a measured run against the calibration's (past 10% the run's warnings say what it
    means too)."""
    meta = cal["calibration"]
    notes = [f"calibrated: each record's seconds from the throughput curves measured on {meta['cpu']} "
             f"({meta['cpu_capability']}, {meta['threads']} threads, torch {meta['torch']}, {meta['date'][:10]}); the "
             "roofline is the bound, the calibrated model the prediction"]
    if cal.get("caveat"):
        notes.append(f"note: {cal['caveat']}")
    if speed:
        run = sum(speed["run_flops_per_s"]) / len(speed["run_flops_per_s"])
        probe = speed.get("probe", "reference GEMM and convolution")  # (a run before the light probe: the reference)
        notes.append(f"machine speed: the calibration's {probe} ran at {run / 1e9:.0f} GFLOP/s around this run, "
                     f"{speed['ratio']:.2f}x its {speed['calibration_flops_per_s'] / 1e9:.0f} GFLOP/s when calibrated")
    return notes


def roofline_sections(roof: dict | None, folder: Path, speed: dict | None = None) -> list[Section] | None:
    """:func:`roofline` of a run's (or a sweep point's) ``roofline`` account; with a calibrated preset, the
    calibrated model's seconds and error beside the roofline's (docs/prediction.md) and, where it was timed around
    the run, the machine's speed against the calibration's (``speed``: the run's ``machine_speed``)."""
    if not roof:
        return None
    pred, vm, cal = roof["prediction"], roof.get("versus_measured"), roof.get("calibrated")
    cvm = (cal or {}).get("versus_measured") or {}
    headers = ["stage", "roofline", *(["calibrated"] if cal else []),
               *(["measured", "roofline error", *(["calibrated error"] if cal else []), "of peak"] if vm else [])]
    stages_ = vm["by_stage"] if vm else {s: None for s in pred["by_stage"]}

    def row(name, r, total=False):
        out = [name, fmt_s(pred["total_s"] if total else (r or {}).get("predicted_s", pred["by_stage"].get(name, 0)))]
        c = (cvm.get("total") if total else cvm.get("by_stage", {}).get(name)) or {}
        if cal:
            out.append(fmt_s(cal["total_s"] if total else cal["by_stage"].get(name, 0.0)))
        if vm:
            m = vm["total"] if total else r
            out += [fmt_s(m["measured_s"]), _pct(m["error"]), *([_pct(c.get("error"))] if cal else []),
                    "" if total else _of_peak(r)]
        return out

    rows = [row(s, r) for s, r in stages_.items()] + [row("total", None, total=True)]
    notes = []
    if any("kernel_s" in r for r in stages_.values() if r):
        notes.append("GPU kernel-busy seconds per stage (roofline vs busy): " + ", ".join(
            f"{s} {fmt_s(r['kernel_s'])} ({100 * r['kernel_error']:+.0f}%)" for s, r in stages_.items()
            if r and "kernel_s" in r and r["kernel_error"] is not None))
    if cal:
        notes += _calibration_notes(cal, speed)
        if vm:
            notes.append("measured: this run's stage times, traced (the tracer's own cost per op included, large for "
                         "small models); the calibrated model predicts an untraced run, so compare it with a "
                         "--no-trace run's stages (benchmarks/predict.py does); its per-layer seconds include the "
                         "fitted cost between operators, which the per-op clock does not see")
    elif roof.get("calibrated_note"):
        notes.append(roof["calibrated_note"])
    if roof.get("caveat"):
        notes.append(f"note: {roof['caveat']}")
    fig = Figure("roofline", "filled: roofline-attainable FLOP/s at each layer type's intensity; hollow: achieved "
                 "(measured runs)", lambda: roofline_figure(roof, folder))
    out = [Section(f"Roofline on {roof['preset']} ({roof['preset_title']}), {roof['dtype']}: ridge "
                   f"{roof['ridge_intensity']:.1f} FLOP/byte", headers, rows, notes, [fig], total=True)]
    types = {k: r for k, r in (vm or {}).get("by_layer_type", {}).items() if r["measured_s"]}
    if types:
        ctypes = cvm.get("by_layer_type", {})
        out.append(Section("Roofline vs measured per layer type",
                           ["layer type", "roofline", *(["calibrated"] if cal else []), "measured", "roofline error",
                            *(["calibrated error"] if cal else []), "of peak"],
                           [[n, fmt_s(r["predicted_s"]), *([fmt_s(ctypes.get(n, {}).get("predicted_s", 0.0))]
                                                           if cal else []),
                             fmt_s(r["measured_s"]), _pct(r["error"]),
                             *([_pct(ctypes.get(n, {}).get("error"))] if cal else []), _of_peak(r)]
                            for n, r in sorted(types.items(), key=lambda kv: -kv[1]["measured_s"])]))
    return out


def roofline_figure(roof: dict, folder: Path):
    """The layer types of the run folder's records on the stored preset's roofline (None without records)."""
    from diffprobe.analyses import roofline as rl
    from diffprobe.hardware.presets import from_dict, get_preset
    from diffprobe.records.runfolder import read_ops_checked

    ops = read_ops_checked(folder)
    if ops is None or not len(ops):
        return None
    try:  # the definition stored with the run: rebuilding a report never measures or reads presets again
        preset = (from_dict(roof["preset_definition"], f"{roof['preset']} (stored in run.json)")
                  if "preset_definition" in roof else get_preset(roof["preset"]))
    except DiffprobeError:
        return None
    return figs.roofline_figure(rl.op_roofline(ops, preset), preset, f"layer types on {preset.title}")


def accelerators(d: RunDocument, folder: Path) -> list[Section] | None:
    """``diffprobe accel``'s account of this run (``accel.json``), when it was run on it."""
    from diffprobe.report.accel import SECTIONS as ACCEL

    path = folder / "accel.json"
    if not path.exists():
        return None
    return build(ACCEL, read_document(path, AccelDocument), folder)


def images(d: RunDocument, folder: Path) -> Section | None:
    image = d.image
    if not image or not (folder / image).exists():
        return None
    note = " (random weights: noise-like by design)" if d.random_weights else ""
    width = min(512, d.width or 512)
    shown = [Image(folder / image, f"{image}{note}", width)]
    ap_image = (d.approx or {}).get("image")
    if ap_image and (folder / ap_image).exists():
        shown.append(Image(folder / ap_image, f"{ap_image}: the same run with {setting_label(d.approx)}", width))
    return Section("Generated video" if image.endswith(".gif") else "Generated image", images=shown, page_only=True)


def environment(d: RunDocument, folder: Path) -> Section | None:
    env = d.environment
    if not env:
        return None
    return Section("Environment", ["item", "value"], [[k, str(v)] for k, v in env.items()], left=2, page_only=True)


SECTIONS = [configuration, findings, stages, parameters, account, compiled, steps, roofline, accelerators, images,
            environment]
