"""Findings in plain sentences, computed from a sweep summary (``sweep.json``): what the numbers say."""

from __future__ import annotations

SHARE_CLASSES = ("conv", "self_attention", "cross_attention", "ffn", "norm")
LABEL = {"conv": "convolution", "self_attention": "self-attention", "cross_attention": "cross-attention",
         "ffn": "feed-forward", "norm": "normalization"}


def _side(p: dict) -> str:
    return f"{p['height']} px" if p["height"] == p["width"] else f"{p['height']}x{p['width']} px"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def sweep_findings(state: dict) -> list[str]:
    """Sentences about scaling, crossover, memory and bottlenecks of a sweep (empty when no point finished)."""
    f = state.get("findings") or {}
    points = f.get("points") or []
    if not points:
        return []
    b0 = f.get("exponents_batch", 1)
    series = sorted((p for p in points if p["batch"] == b0), key=lambda p: p["side"])
    last = series[-1]
    out = []
    unet = last["flops"]["unet"]
    total = unet["total"] or 1
    fits = f.get("exponents", {}).get("flops", {})
    for c in ("self_attention", "conv"):
        fit = fits.get(c)
        grow = f" and grows as side^{fit['k']:.2f}" if fit else ""
        core = fits.get("self_attention_core") if c == "self_attention" else None
        if core:
            grow += f" (its scores, softmax and P·V as side^{core['k']:.2f})"
        out.append(f"{LABEL[c].capitalize()} is {100 * unet.get(c, 0) / total:.1f}% of UNet FLOPs at "
                   f"{_side(last)}{grow}.")
    cross = (f.get("crossover") or {}).get("flops")
    if cross:
        if cross.get("already_ahead"):
            out.append(f"Self-attention already has more UNet FLOPs than convolution at {_side(series[0])}.")
        else:
            how = "extrapolating the fitted power laws" if cross["extrapolated"] else "between sweep points"
            out.append(f"Self-attention overtakes convolution in UNet FLOPs at about {cross['side']:.0f} px "
                       f"({how}).")
    elif len(series) > 1:
        out.append("Self-attention does not overtake convolution in UNet FLOPs within or beyond this sweep.")
    tcross = (f.get("crossover") or {}).get("seconds")
    if tcross and not tcross.get("already_ahead"):
        how = "extrapolated" if tcross["extrapolated"] else "measured"
        out.append(f"In measured time, self-attention overtakes convolution at about {tcross['side']:.0f} px ({how}).")
    mem = last.get("attention_memory") or {}
    if mem.get("materialized_bytes"):
        out.append(f"At {_side(last)} the largest attention score matrix would take "
                   f"{_gib(mem['materialized_bytes'])} if materialized; a fused kernel's working set for that "
                   f"call is {_gib(mem['fused_bytes'])}.")
    top = last.get("bottlenecks") or []
    if top:
        b = top[0]
        out.append(f"The largest single UNet cost at {_side(last)} is {b['layer_class']} at level {b['level']} "
                   f"({b['tokens']} tokens): {100 * b['share']:.1f}% of UNet FLOPs.")
    roof = last.get("roofline")
    if roof and roof.get("versus_measured"):
        vm = roof["versus_measured"]["total"]
        if vm.get("error") is not None:
            out.append(f"On {roof['preset']}, the roofline predicts {vm['predicted_s']:.2f} s for the traced ops "
                       f"at {_side(last)}; measured {vm['measured_s']:.2f} s ({100 * vm['error']:+.0f}%).")
    elif roof:
        out.append(f"On {roof['preset']}, the roofline predicts {roof['prediction']['total_s']:.2f} s for the run "
                   f"at {_side(last)} ({100 * roof['prediction']['compute_bound_share']:.0f}% of it compute-bound).")
    return out
