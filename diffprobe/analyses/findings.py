"""Findings in plain sentences: what the numbers of a profile, sweep, approx or sparsity run say. Computed once by
the run (:mod:`diffprobe.run`) and stored in its document (``findings``); the report prints them as stored."""

from __future__ import annotations

from diffprobe.analyses import scaling
from diffprobe.units import fmt_bytes, fmt_k, fmt_n, fmt_s, setting_name, setting_series

SHARE_CLASSES = ("conv", "self_attention", "cross_attention", "ffn", "norm")
DIT_SHARE_CLASSES = ("attention_core", "joint_attention", "self_attention", "cross_attention", "linear_layers",
                     "ffn")
LABEL = {"attention_core": "attention (scores, softmax, P·V)", "linear_layers": "the per-token linear layers",
         "conv": "convolution", "self_attention": "self-attention", "cross_attention": "cross-attention",
         "ffn": "feed-forward", "norm": "normalization", "joint_attention": "joint attention"}


def share_classes(point_or_findings: dict) -> tuple[str, ...]:
    """The layer classes a sweep table shows: a UNet's (convolution, self/cross-attention, ...), or a diffusion
    transformer's (attention core, joint/self/cross attention, linear layers, FFN)."""
    f = point_or_findings
    dit = f.get("denoiser") == "transformer" or any(p.get("denoiser") == "transformer" for p in f.get("points", []))
    return DIT_SHARE_CLASSES if dit else SHARE_CLASSES


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _side(p: dict) -> str:
    size = f"{p['height']} px" if p["height"] == p["width"] else f"{p['height']}x{p['width']} px"
    return size + (f" x {p['frames']} frames" if p.get("frames") else "")


def sweep_findings(state: dict) -> list[str]:
    """Sentences about scaling, crossover, memory and bottlenecks of a sweep (empty when no point finished)."""
    f = state.get("findings") or {}
    points = f.get("points") or []
    if not points:
        return []
    b0 = f.get("exponents_batch", 1)
    f0 = f.get("exponents_frames_at")
    series = sorted((p for p in points if p["batch"] == b0 and p.get("frames") == f0),
                    key=lambda p: p["side"]) or sorted(points, key=lambda p: (p["batch"], p["side"]))
    clip = sorted((p for p in points if p["batch"] == b0 and p["side"] == f.get("frames_series_side")
                   and p.get("latent_frames")), key=lambda p: p["latent_frames"])
    last = max(series[-1], clip[-1], key=lambda p: p["flops"]["denoiser"]["total"]) if clip else series[-1]
    out = []
    unet = last["flops"]["denoiser"]
    total = unet["total"] or 1
    fits = f.get("exponents", {}).get("flops", {})
    pair = f.get("crossover_pair", ("self_attention", "conv"))
    what = "UNet" if pair[0] == "self_attention" else "denoiser"
    for c in pair:
        fit = fits.get(c)
        grow = f", growing as side^{fmt_k(fit['k'])}" if fit else ""
        core = fits.get("self_attention_core") if c == "self_attention" else None
        if core:
            grow += f" (its scores, softmax and P·V as side^{fmt_k(core['k'])})"
        out.append(f"{_cap(LABEL[c])}: {100 * unet.get(c, 0) / total:.1f}% of {what} FLOPs at "
                   f"{_side(last)}{grow}.")
    out += _crossover_sentences(f, pair, what, series)
    if clip:
        out += _frames_sentences(f, pair, clip)
    out += _largest_point_sentences(last, what)
    return out


def _frames_sentences(f: dict, pair, clip: list[dict]) -> list[str]:
    """A video sweep along frames: each class of ``pair``'s exponent in latent frames, and where the first overtakes
    the second."""
    fits = (f.get("exponents_latent_frames") or {}).get("flops", {})
    grows = [f"{LABEL[c]} as latent frames^{fmt_k(fits[c]['k'])}" for c in pair if fits.get(c)]
    first, last = clip[0], clip[-1]
    size = _side(first).split(" x ")[0]
    out = [f"Over {first['frames']}-{last['frames']} frames ({first['latent_frames']}-{last['latent_frames']} latent) "
           f"at {size}, denoiser FLOPs grow: " + ", ".join(grows) + "."] if grows else []
    cross = (f.get("crossover_latent_frames") or {}).get("flops")
    a, b = (LABEL.get(c, c) for c in pair)
    if cross and cross.get("latent_frames") is not None and not cross.get("already_ahead"):
        how = "extrapolating the fitted power laws" if cross["extrapolated"] else "between sweep points"
        out.append(f"{_cap(a)} overtakes {b} in denoiser FLOPs at about {cross['latent_frames']:.1f} latent frames "
                   f"at {size} ({how}).")
    elif cross and cross.get("already_ahead"):
        out.append(f"{_cap(a)} already has more denoiser FLOPs than {b} at {_side(first)}.")
    return out


def _crossover_sentences(f: dict, pair, what: str, series: list[dict]) -> list[str]:
    """Where the first class of ``pair`` overtakes the second, in FLOPs and in measured time."""
    out = []
    a, b = (LABEL.get(c, c) for c in pair)
    cross = (f.get("crossover") or {}).get("flops")
    if cross and cross.get("side") is None:
        out.append(f"{_cap(a)} does not overtake {b} in {what} FLOPs within this sweep; {cross['why']}.")
    elif cross:
        if cross.get("already_ahead"):
            out.append(f"{_cap(a)} already has more {what} FLOPs than {b} at {_side(series[0])}.")
        else:
            how = "extrapolating the fitted power laws" if cross["extrapolated"] else "between sweep points"
            out.append(f"{_cap(a)} overtakes {b} in {what} FLOPs at about {cross['side']:.0f} px "
                       f"({how}).")
    elif len(series) > 1:
        out.append(f"{_cap(a)} does not overtake {b} in {what} FLOPs within or beyond this sweep.")
    tcross = (f.get("crossover") or {}).get("seconds")
    if tcross and tcross.get("side") is None:
        out.append(f"In measured time, {a} does not overtake {b} within this sweep; {tcross['why']}.")
    elif tcross and not tcross.get("already_ahead"):
        how = "extrapolated" if tcross["extrapolated"] else "measured"
        out.append(f"In measured time, {a} overtakes {b} at about {tcross['side']:.0f} px ({how}).")
    return out


def _largest_point_sentences(last: dict, what: str) -> list[str]:
    """At the sweep's largest point: attention memory, the largest cost, the roofline."""
    out = []
    mem = last.get("attention_memory") or {}
    if mem.get("materialized_bytes"):
        out.append(f"At {_side(last)} the largest attention score matrix would take "
                   f"{fmt_bytes(mem['materialized_bytes'])} if materialized; a fused kernel's working set for that "
                   f"call is {fmt_bytes(mem['fused_bytes'])}.")
    top = last.get("bottlenecks") or []
    if top:
        b = top[0]
        out.append(f"The largest single {what} cost at {_side(last)} is {b['layer_class']} at level {b['level']} "
                   f"({b['tokens']} tokens): {100 * b['share']:.1f}% of {what} FLOPs.")
    roof = last.get("roofline")
    if roof and roof.get("versus_measured"):
        vm = roof["versus_measured"]["total"]
        if vm.get("error") is not None:
            out.append(f"On {roof['preset']}, the roofline predicts {fmt_s(vm['predicted_s'])} for the traced ops "
                       f"at {_side(last)}; measured {fmt_s(vm['measured_s'])} ({100 * vm['error']:+.0f}%).")
    elif roof:
        out.append(f"On {roof['preset']}, the roofline predicts {fmt_s(roof['prediction']['total_s'])} for the run "
                   f"at {_side(last)} ({100 * roof['prediction']['compute_bound_share']:.0f}% of it compute-bound).")
    return out


HOST_BOUND_SHARE = 0.25  # a traced GPU run with more time outside ops than this is paced by the host


def profile_findings(run: dict, ops=None) -> list[str]:
    """Sentences about one profile run (``run.json`` content; ``ops`` the op table, when readable)."""

    out = []
    stages = {k: v for k, v in (run.get("stages") or {}).items() if k != "total"}
    total = (run.get("stages") or {}).get("total")
    if stages and total:
        top = max(stages, key=stages.get)
        out.append(f"The {top} stage takes {100 * stages[top] / total:.1f}% of the measured time "
                   f"({stages[top]:.2f} s of {total:.2f} s).")
        proj = run.get("projection")
        if proj and proj.get("total_s"):
            unet = proj["stages"].get("denoiser", 0.0)
            out.append(f"Projected to all {proj['denoiser_evals_full']} denoiser evaluations, the denoiser is "
                       f"{100 * unet / proj['total_s']:.1f}% of {proj['total_s']:.1f} s (a projection from "
                       f"{proj['denoiser_evals_measured']} measured evaluations, not a measurement).")
    if ops is not None and len(ops):
        out += _denoiser_sentences(ops, run["denoiser_kind"] == "transformer")
    out += _moe_sentences(run, ops)
    out += _convention_and_time_sentences(run)
    return out


def _moe_sentences(run: dict, ops) -> list[str]:
    """A mixture-of-experts denoiser: parameters active per token against the total, the experts' share of the
    denoiser's FLOPs, and how evenly the tokens were routed (measured) or the routing assumed (analytic)."""
    moe = run.get("moe")
    if not moe:
        return []
    out = [f"Mixture of experts: {moe['layers']} layers of {moe['experts']} routed experts (top {moe['top_k']}) "
           f"and {moe['shared_experts']} shared; {fmt_n(moe['params_active_per_token']).strip()} of "
           f"{fmt_n(moe['params_total']).strip()} denoiser parameters are active per token."]
    if ops is not None and len(ops):
        den = ops[ops["stage"] == "denoiser"]
        total = den["flops"].sum()
        routed = den.loc[den["layer_type"] == "moe_expert", "flops"].sum()
        load = moe.get("expert_load") or {}
        if total and load:
            even = 1 / moe["experts"]
            how = ("the routing is assumed balanced (analytic: no values to route by)"
                   if moe["routing"].startswith("assumed") else
                   f"the busiest expert took {100 * load['max_load_share']:.0f}% of a call's token assignments "
                   f"and the least busy {100 * load['min_load_share']:.0f}% ({100 * even:.0f}% each if even)")
            out.append(f"Routed experts are {100 * routed / total:.1f}% of the denoiser's FLOPs; {how}.")
    return out


def _denoiser_sentences(ops, dit: bool) -> list[str]:
    """The denoiser's FLOPs by layer class, its largest single cost, and the largest attention score matrix
    (``dit``: the denoiser is a diffusion transformer, as the run's ``denoiser_kind`` says)."""
    out = []
    u = scaling.class_totals(ops, "flops", "denoiser")
    what = "denoiser" if dit else "UNet"  # a diffusion transformer is no UNet
    if u["total"]:
        classes = DIT_SHARE_CLASSES if dit else SHARE_CLASSES
        parts = ", ".join(f"{LABEL[c]} {100 * u[c] / u['total']:.1f}%" for c in classes if u.get(c))
        overlap = " (the classes overlap: attention layers include their projections)" if dit else ""
        out.append(f"{_cap(what)} FLOPs by layer class: {parts}{overlap}.")
    top = scaling.bottlenecks(ops[ops["stage"] == "denoiser"], "flops", 1)
    if top:
        b = top[0]
        out.append(f"The largest single {what} cost is {b['layer_class']} at level {b['level']} "
                   f"({b['tokens']} tokens): {100 * b['share']:.1f}% of {what} FLOPs.")
    mem = scaling.attention_memory(ops)
    if mem["materialized_bytes"]:
        out.append(f"The largest attention score matrix would take {fmt_bytes(mem['materialized_bytes'])} if "
                   f"materialized; a fused kernel's working set for that call is {fmt_bytes(mem['fused_bytes'])}.")
    return out


def _convention_and_time_sentences(run: dict) -> list[str]:
    """The literature's MAC convention against the complete count; unattributed time; the roofline."""
    out = []
    flops = run.get("flops") or {}
    if flops.get("total") and run.get("macs_conv_linear"):
        lit = 2 * sum(run["macs_conv_linear"].values())
        share = 100 * lit / flops["total"]
        out.append(f"Published MAC tables (conv + linear multiply-adds only) would count {share:.1f}% "
                   f"of the {fmt_n(flops['total'])}FLOPs traced; attention products, norms and activations "
                   "are the rest.")
    secs = run.get("seconds")
    if secs and secs.get("total"):
        un = secs.get("by_layer_type", {}).get("unattributed", 0.0)
        share = un / secs["total"]
        out.append(f"{100 * share:.1f}% of the measured time is not attributed to any operator "
                   "(Python between ops, hooks) and is shown as unattributed.")
        for stage, r in (secs.get("op_time_ratio") or {}).items():  # the ops timed in another run (--compile)
            out.append(f"The {stage}'s operator times add up to {r:.2f}x its stage time: they were measured in "
                       "another run (with --compile, the profiled compiled run) and are scaled to the stage time, so "
                       "its layer types keep their proportions and no time is negative.")
        if str(run.get("device", "")).startswith("cuda") and share > HOST_BOUND_SHARE:
            out.append("On a GPU that much unattributed time means the device waited on the host: the op tracer's "
                       "own per-op work sets the pace, so this traced run's per-op times and its roofline "
                       "comparison describe the host, not the GPU (measured on an H100: 62–70% unattributed, "
                       "UNet 20–110× its roofline time). Time the stages with --no-trace.")
    roof = run.get("roofline")
    if roof:
        vm = (roof.get("versus_measured") or {}).get("total")
        if vm and vm.get("error") is not None:
            out.append(f"On {roof['preset']}, the roofline predicts {fmt_s(vm['predicted_s'])} for the traced ops; "
                       f"measured {fmt_s(vm['measured_s'])} ({100 * vm['error']:+.0f}%).")
        else:
            out.append(f"On {roof['preset']}, the roofline predicts {fmt_s(roof['prediction']['total_s'])} for the "
                       f"traced ops ({100 * roof['prediction']['compute_bound_share']:.0f}% of it compute-bound).")
    return out


def approx_findings(state: dict) -> list[str]:
    """Per method: the most attention FLOPs saved while staying close to dense (SSIM >= 0.9, and accuracy
    within 5 points of dense where measured)."""
    res = state["results"]
    dense = res[0]
    out = []
    for m in dict.fromkeys(setting_series(r) for r in res[1:]):
        ok = [r for r in res[1:] if setting_series(r) == m and r["ssim"] >= 0.9 and (
            r.get("accuracy") is None or r["accuracy"] >= dense["accuracy"] - 0.05)]
        if ok:
            best = max(ok, key=lambda r: r["attention_share_saved"])
            acc = f", digit accuracy {100 * best['accuracy']:.0f}%" if best.get("accuracy") is not None else ""
            out.append(f"{m}: up to {100 * best['attention_share_saved']:.1f}% of attention FLOPs "
                       f"({100 * best['end_to_end_share_saved']:.1f}% end to end) saved at {setting_name(best)} "
                       f"with SSIM {best['ssim']:.3f}{acc}; denoiser time "
                       f"{best['denoiser_s'] / dense['denoiser_s']:.2f}x dense.")
        else:
            out.append(f"{m}: no tested value keeps SSIM >= 0.9 (and accuracy within 5 points of dense).")
    if dense.get("accuracy") is not None:
        out.append(f"Dense generation: {100 * dense['accuracy']:.0f}% of images classified as the requested digit.")
    return out


def eps_tau(state: dict) -> tuple[float, float]:
    """The ε and τ a sparsity summary is told at: those of the run closest to 1e-3 and 0.95."""
    return min(state["eps"], key=lambda x: abs(x - 1e-3)), min(state["taus"], key=lambda x: abs(x - 0.95))


def _volume(tile: str) -> int:
    """The tokens of a tile named ``TxHxW``."""
    t, h, w = (int(x) for x in tile.split("x"))
    return t * h * w


def sparsity_headline(state: dict) -> list[str]:
    """Sentences: how sparse self- and cross-attention are at each resolution."""
    out = []
    e, t = eps_tau(state)
    for res, s in state["summary"].items():
        for kind, m in s["by_kind"].items():
            out.append(f"{res}, {kind}-attention: {100 * m[f'below_{e:g}']:.1f}% of probabilities are below {e:g}; "
                       f"{100 * m[f'keys_frac_{t:g}']:.1f}% of the keys cover {100 * t:g}% of each row's mass "
                       f"(row entropy {m['entropy']:.2f} of uniform).")
        self_attn = s["by_kind"].get("self", {})
        shapes = [f"runs of {b} tokens {100 * self_attn[f'blocks_{b}_{t:g}']:.1f}%" for b in state.get("blocks", [])
                  if self_attn.get(f"blocks_{b}_{t:g}") is not None]
        shapes += [f"{name} tiles ({_volume(name)} tokens) {100 * self_attn[f'tiles_{name}_{t:g}']:.1f}%"
                   for name in state.get("tiles") or [] if self_attn.get(f"tiles_{name}_{t:g}") is not None]
        if state.get("tiles") and shapes:
            out.append(f"{res}, self-attention key blocks needed for {100 * t:g}% of each query block's mass, by "
                       f"block shape: " + ", ".join(shapes) + ".")
    for res, ov in (state.get("mask_step_overlap") or {}).items():
        key = next((k for k in ov if k.endswith(f"_{t:g}")), None)
        if key:
            b = key.split("_")[0]
            out.append(f"{res}: the self-attention blocks kept (side {b}, mass {100 * t:g}%) overlap "
                       f"{100 * ov[key]:.1f}% from one step to the next (mean Jaccard over layers and heads).")
    return out
