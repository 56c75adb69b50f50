"""The sections of ``diffprobe approx`` (``approx.json``) and of ``diffprobe sparsity`` (``sparsity.json``)."""

from __future__ import annotations

from pathlib import Path

from diffprobe.analyses.findings import eps_tau
from diffprobe.errors import DiffprobeError
from diffprobe.records.documents import ApproxDocument, SparsityDocument
from diffprobe.report import figures as figs
from diffprobe.report.sections import Figure, Image, Section
from diffprobe.units import fmt_s, size_words


def findings(state: ApproxDocument, folder: Path) -> Section:
    return Section("Findings", notes=list(state.findings or []))


def approx_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the trade-off (``approx.json``'s results): one row per method and parameter value, dense
    first."""
    headers = ["method", "param", "attn FLOPs saved", "end-to-end saved", "kept", "denoiser s", "kernel", "PSNR",
               "SSIM"]
    digits = results[0].get("accuracy") is not None
    clip = results[0].get("clip_score") is not None
    headers += (["digit accuracy"] if digits else []) + (["CLIP score"] if clip else [])
    rows = []
    for r in results:
        param = "" if r["method"] == "dense" else f"{r['param']}={r['value']:g}"
        method = r["method"]
        if r.get("setting") and "+" in r["setting"]:  # a composed setting: both methods, both parameters
            method, param = "+".join(p.split("=")[0] for p in r["setting"].split("+")), r["setting"]
        if (r.get("mask_interval") or 1) > 1 and "mask every" not in param:  # block masks reused across steps
            param += f", mask every {r['mask_interval']}"
        row = [method, param, f"{100 * r['attention_share_saved']:.1f}%", f"{100 * r['end_to_end_share_saved']:.1f}%",
               f"{100 * r['kept_fraction']:.1f}%", fmt_s(r["denoiser_s"]), r.get("kernel", ""),
               "identical" if r["psnr"] is None else f"{r['psnr']:.1f} dB", f"{r['ssim']:.3f}"]
        row += ([f"{100 * r['accuracy']:.0f}%"] if digits else []) + ([f"{r['clip_score']:.2f}"] if clip else [])
        rows.append(row)
    return headers, rows


def tradeoff(state: ApproxDocument, folder: Path) -> Section:
    from diffprobe.methods.registry import REUSE

    reuse = any(any(p.split("=")[0] in REUSE for p in (r.get("setting") or "").split("+")) for r in state.results)
    what = "approximate attention" + (" and step reuse" if reuse else "")
    headers, rows = approx_rows(state.results)
    notes = list(state.notes)
    banners = ["Random weights: attention is near-uniform, so these savings and quality figures say nothing about a "
               "trained model; use --model digits or --weights."] if state.random_weights else []
    repeat = (state.repeat or 1) > 1
    figures = [Figure("tradeoff", "attention FLOPs saved vs quality, per method",
                      lambda: figs.tradeoff(state.results), True),
               Figure("pareto", "every setting (attention, reuse and both): FLOPs and seconds saved against quality, "
                      "with the Pareto front; numbered points, named in the key"
                      + ("; bars: the min–max of the repeated runs" if repeat else ""),
                      lambda: figs.pareto(state.results), True)]
    tiles = f", block tiles {'x'.join(map(str, state.tile))}" if state.tile else ""
    outputs = "video(s)" if state.frames else "image(s)"
    return Section(f"Trade-off: {what} vs dense: {state.model} {size_words(state)}{tiles}, "
                   f"{state.steps} steps, {len(state.prompts)} {outputs}", headers, rows, notes, figures, left=2,
                   banners=banners, terminal_banners=True)


def images(state: ApproxDocument, folder: Path) -> Section:
    shown = []
    for r in state.results:
        if (folder / r["image"]).exists():
            label = "dense" if r["method"] == "dense" else (r.get("setting")
                                                              or f"{r['method']} {r['param']}={r['value']:g}")
            shown.append(Image(folder / r["image"], label, min(960, 64 * min(10, len(state.prompts or [1])))))
    return Section("Images: dense and approximate (same noise)", images=shown, page_only=True)


def _interval(m: dict | None, digits: int = 2, scale: float = 1.0) -> str:
    """A mean with its 95% interval: ``27.99 [27.12, 28.86]``; ``–`` where there is none."""
    if not m or m.get("mean") is None:
        return "–"
    text = f"{scale * m['mean']:.{digits}f}"
    if m.get("ci95"):
        lo, hi = m["ci95"]
        text += f" [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"
    return text


def campaign(state: ApproxDocument, folder: Path) -> Section | None:
    """``approx --prompts``: every setting's quality over the campaign's images."""
    c = state.campaign
    if not c:
        return None
    first = c["settings"][0]
    headers = ["setting", "images", "identical", "PSNR dB [95% CI]", "SSIM [95% CI]"]
    headers += ["CLIP score [95% CI]"] if first.get("clip_score") else []
    headers += ["digit shown, % [95% CI]"] if "accuracy" in first else []
    headers += ["FID vs dense"] if c.get("inception_weights") else []
    headers += [f"FID vs reference ({c['reference_count']} images)"] if c.get("reference_count") else []
    rows = []
    for r in c["settings"]:
        row = [r.get("label", r["setting"]), str(r["images"]), str(r["identical_images"]), _interval(r["psnr"]),
               _interval(r["ssim"], 4)]
        row += [_interval(r["clip_score"])] if first.get("clip_score") else []
        row += [_interval(r["accuracy"], 1, 100)] if "accuracy" in first else []
        row += [f"{r['fid_vs_dense']:.2f}" if r["fid_vs_dense"] is not None else "–"] if c.get("inception_weights") \
            else []
        row += [f"{r['fid_vs_reference']:.2f}"] if c.get("reference_count") else []
        rows.append(row)
    title = (f"Quality over {c['prompts']} prompts x {c['images_per_prompt']} image(s) ({c['images']} images, "
             f"executor {c['executor']}): every setting against dense from the same seeds")
    notes = [f"{state.model} at {state.width}x{state.height}, {state.steps} steps; images in "
             f"campaign/<setting>/, one row per image and setting in {c['rows']}", *c.get("notes", [])]
    return Section(title, headers, rows, notes)


APPROX = [findings, tradeoff, campaign, images]


def sparsity_rows(state: SparsityDocument) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the sparsity summary: mean statistics by resolution, self/cross and level."""
    e, t = eps_tau(state)
    b = state.blocks[0]
    tiles = state.tiles or []
    headers = ["resolution", "attention", "level", f"p < {e:g}", f"keys for {t:g}", "entropy", f"empty {b}-blocks",
               f"{b}-blocks for {t:g}"] + [f"{name} tiles for {t:g}" for name in tiles]
    rows = []
    for res, s in state.summary.items():
        items = [(kind, "all", m) for kind, m in s["by_kind"].items()]
        items += [("both", lv, m) for lv, m in s["by_level"].items()]
        for kind, lv, m in items:
            rows.append([res, kind, lv, f"{100 * m[f'below_{e:g}']:.1f}%", f"{100 * m[f'keys_frac_{t:g}']:.1f}%",
                         f"{m['entropy']:.2f}", f"{100 * m[f'empty_blocks_{b}_{e:g}']:.1f}%",
                         f"{100 * m[f'blocks_{b}_{t:g}']:.1f}%"]
                        + [_share(m.get(f"tiles_{name}_{t:g}")) for name in tiles])
    return headers, rows


def _share(x) -> str:
    """A mean share as a percentage; "—" where no call had it (a tile's columns: the video's self-attention only)."""
    return "—" if x is None or x != x else f"{100 * x:.1f}%"


def sparsity_status(state: SparsityDocument, folder: Path) -> Section:
    banners = []
    if state.random_weights:
        banners.append(state.note or "random weights: sparsity figures mean nothing for a trained model")
    if not state.complete:
        banners.append("This sparsity run did not finish: the figures show the last complete summary. Run the same "
                       "command again to finish it.")
    return Section("Status", banners=banners, fail=not state.complete, terminal_banners=True)


def sparsity_means(state: SparsityDocument, folder: Path) -> Section | None:
    if not state.summary:
        return None
    headers, rows = sparsity_rows(state)
    notes = [f"tile columns ({', '.join(state.tiles)}: frames x height x width of the token grid) cover the video's "
             "self-attention only — cross-attention's keys are the caption — so a level's tile share is its "
             "self-attention's, while its other columns mean over self- and cross-attention"] if state.tiles else []
    return Section(f"Mean statistics (over heads, steps and layers): {state.model}", headers, rows, notes, left=3)


def sparsity_resolutions(state: SparsityDocument, folder: Path) -> list[Section]:
    """Per resolution: a heatmap (layer x step) per attention kind, the histogram of keys covering the mass, the
    image (from ``sparsity.parquet``)."""
    import pandas as pd

    path = folder / "sparsity.parquet"
    try:
        stats = pd.read_parquet(path)
    except Exception as exc:  # a missing or damaged table: one clear message
        raise DiffprobeError(f"{path} is unreadable: {type(exc).__name__}: {exc}") from exc
    e, t = eps_tau(state)
    out = []
    for (h, w), g in stats.groupby(["height", "width"], sort=False):
        figures = [Figure(f"heatmap_{h}x{w}_{kind}", f"{kind}-attention, fraction of probabilities below {e:g}, mean "
                          "over heads", lambda gk=gk, kind=kind: figs.sparsity_heatmap(
                              gk, f"below_{e:g}", f"{kind}-attention: share of probabilities < {e:g} (layer × step)"))
                   for kind, gk in g.groupby("attn_kind", sort=False)]
        figures.append(Figure(f"hist_{h}x{w}", "distribution over layers, heads and steps",
                              lambda g=g: figs.sparsity_histogram(g, f"keys_frac_{t:g}", f"fraction of keys covering "
                                                                  f"{t:g} of a row's mass")))
        point = next((p for p in state.points if p["height"] == h and p["width"] == w), None)
        shown = []
        if point and point.get("image") and (folder / point["dir"] / point["image"]).exists():
            shown.append(Image(folder / point["dir"] / point["image"], f"generated image at {h}×{w}",
                               max(128, min(512, w * 4))))
        out.append(Section(f"{h}×{w} px", figures=figures, images=shown, page_only=True))
    return out


SPARSITY = [sparsity_status, findings, sparsity_means, sparsity_resolutions]
