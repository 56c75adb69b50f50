"""``diffprobe approx``: run approximate attention methods against dense, and measure what they save and cost.

For each method and parameter value the same prompts are generated from the same noise as the dense run, and
compared: attention FLOPs saved (exact account, :mod:`diffprobe.attention.approx`), end-to-end FLOPs saved
(against the analytic cost account of the same configuration), measured UNet time, image PSNR and SSIM
(scikit-image) against dense, latent relative error per step, and — on the ``digits`` fixture — the share of
images a digit classifier recognizes as the digit their prompt asked for.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from diffprobe.analyses.findings import approx_findings
from diffprobe.analyses.quality import quality
from diffprobe.analyses.savings import account, approximate_account, end_to_end_saved, scaled_records
from diffprobe.attention.approx import JOINT_NOTE, PARAM, ApproxAttention, kernels_used, masked_note
from diffprobe.attention.approx import check_model as check_attention_model
from diffprobe.attention.clipscore import ClipScorer
from diffprobe.errors import DiffprobeError
from diffprobe.models import digits
from diffprobe.models.digits import DigitClassifier
from diffprobe.models.registry import get_spec
from diffprobe.records.documents import ApproxDocument
from diffprobe.records.masks import write_masks
from diffprobe.records.runfolder import atomic_write, prepare_out_dir, release_folder, write_document, write_ops
from diffprobe.run.config import check_one_expert
from diffprobe.run.generation import generate
from diffprobe.run.profile import (
    analytic_twin,
    build_pipeline,
    check_memory,
    count_denoiser_evals,
    run_profile,
)
from diffprobe.run.setting import installed_setting, reuse_records
from diffprobe.run.settings import parse_settings
from diffprobe.run.warmup import warm_up


def prompts_for(cfg, per_digit: int) -> tuple[list[str], list[int] | None]:
    """The quality batch: every digit ``per_digit`` times on the digits fixture, else the one prompt."""
    if get_spec(cfg.model).quality_batch == "digits":
        labels = [d for d in range(10) for _ in range(per_digit)]
        return [digits.prompt(d) for d in labels], labels
    return [cfg.prompt], None


def run_approx(base, methods: dict[str, list[float]], *, renormalize: bool = True, block: int = 64, rank: int = 8,
               per_digit: int = 3, out: str | Path | None = None, progress=None, clip_weights: str | None = None,
               force: bool = False, save_masks: bool = True, settings: list[str] | None = None,
               mask_interval: int | Sequence[int] = 1, repeat: int = 1,
               tile: tuple[int, int, int] | None = None, campaign=None) -> dict:
    """Dense, then every (method, value) and every extra setting (``block=0.9+deepcache=3``: attention and
    step-level reuse together); writes ``approx.json``, ``approx.parquet`` and images into ``out`` (default
    ``runs/<time>-approx-<model>``). PSNR is ``None`` where every image equals dense (``identical``);
    ``identical_images`` counts those left out of the mean. ``mask_interval`` (one or several): every ``block``
    setting runs once per interval, a row each (``mask_interval`` in the row), so the quality cost of reusing
    masks is measured against the same dense run as the setting itself. ``repeat``: timed generations per row
    (same noise, so the same images); ``denoiser_s`` is their median, ``denoiser_s_min`` / ``denoiser_s_max`` the
    spread. ``tile`` (t, h, w): the block method's blocks are 3D tiles of the video's latent grid (its self-attention
    calls; see :mod:`diffprobe.attention.approx`). ``campaign``
    (:class:`~diffprobe.run.campaign.CampaignRequest`): every setting's quality over a prompts file too, in
    ``approx.json``'s ``campaign`` and ``campaign.parquet``."""
    if repeat < 1:
        raise DiffprobeError(f"--repeat must be at least 1, got {repeat}")
    entries = campaign.entries() if campaign is not None else None  # the prompts file checked before any work

    check_memory(get_spec(base.model), base.dtype, base.device, analytic=False)  # quality needs the model run
    cfg = replace(base, mode="measured", trace_ops=False).resolved()
    intervals = [mask_interval] if isinstance(mask_interval, int) else list(mask_interval)
    parsed = [parse_settings(f"{m}={v:g}".replace("e+", "e")) for m, vs in methods.items() for v in vs]
    parsed += [parse_settings(t) for t in settings or []]
    # (setting, mask interval): block settings once per interval; other methods do not predict masks
    if intervals != [1] and not any(s.attention is not None and s.attention[0] == "block" for s in parsed):
        raise DiffprobeError(f"--mask-interval {','.join(map(str, intervals))} applies to the block method (it reuses "
                             "its predicted masks); add --method block or leave it out")
    todo = [(setting, n) for setting in parsed
            for n in (intervals if setting.attention is not None and setting.attention[0] == "block"
                      else intervals[:1])]
    spec = get_spec(cfg.model)
    check_one_expert(spec, "approx")
    grid = _tile_grid(spec, cfg, tile, parsed)
    block = math.prod(tile) if tile is not None else block
    for setting, n in todo:  # every parameter checked before any work
        if setting.attention is not None:
            check_attention_model(spec.family, cfg.model, setting.attention[0])
            ApproxAttention(*setting.attention, renormalize=renormalize, block=block, rank=rank,
                            mask_interval=n, tile=tile, grid=grid)
    clip = ClipScorer(clip_weights) if clip_weights is not None else None  # checked before any work
    out_dir = prepare_out_dir(out, f"approx-{cfg.model}", force)
    tiles = {"tile": tile, "grid": grid} if tile else {}
    try:
        state = _approx_into(out_dir, cfg, todo, intervals, clip, progress, per_digit, renormalize, block, rank,
                             save_masks, repeat, tiles)
        if campaign is not None:
            from diffprobe.run.campaign import run_campaign

            state["campaign"] = run_campaign(campaign, entries, out_dir, cfg, todo, {
                "renormalize": renormalize, "block": block, "rank": rank, **tiles}, clip_weights,
                spec.quality_batch == "digits", progress or (lambda *_: None))
            write_document(out_dir, ApproxDocument.from_fields(state))
        return state
    finally:
        release_folder(out_dir)  # written: its files claim it from now on


def _tile_grid(spec, cfg, tile, parsed) -> tuple | None:
    """The video's token grid for 3D tiles (a video model, a block setting), or None without ``--tile``."""
    if tile is None:
        return None
    if not spec.video:
        raise DiffprobeError(f"--tile applies to video models (3D tiles of the latent grid); {cfg.model} makes "
                             "images: use --block")
    if not any(s.attention is not None and s.attention[0] == "block" for s in parsed):
        raise DiffprobeError("--tile sets the block method's tiles: add --method block (or a block=τ setting)")
    return spec.token_grid(cfg.height, cfg.width, cfg.frames)


@dataclass
class _Batch:
    """What every row of an approx run shares: the folder, the config, the pipeline, the quality batch and its
    scorers, the dense run's analytic records and timed generation, and the options of the attention methods."""

    out_dir: Path
    cfg: object
    pipe: object
    prompts: list[str]
    labels: list[int] | None
    classifier: object
    clip: object
    ops: object  # the dense analytic records of the batch (one prompt's text encoding)
    text: float  # FLOPs of one prompt's text encoding
    options: dict  # renormalize, block, rank, save_masks, repeat
    intervals: list[int]
    dense: dict | None = None

    @functools.cached_property
    def attention(self):
        """The dense run's denoiser attention records (scores, softmax, P·V), filtered once."""
        ops = self.ops
        return ops[(ops["stage"] == "denoiser") & ops["layer_type"].isin(("attn_score", "attn_softmax", "attn_pv"))]

    def scores(self, images) -> dict:
        return {"accuracy": self.classifier.accuracy(images, self.labels) if self.classifier else None,
                "clip_score": self.clip.score(images, self.prompts) if self.clip else None}


def _approx_into(out_dir: Path, cfg, todo, intervals, clip, progress, per_digit, renormalize, block, rank,
                 save_masks, repeat, tiles: dict) -> dict:
    report = progress or (lambda *_: None)
    prompts, labels = prompts_for(cfg, per_digit)
    pipe = build_pipeline(cfg, get_spec(cfg.model))
    for setting, _ in todo:  # a reuse method for another model family: refused before any run
        if setting.reuse is not None:
            setting.reuse.check_model(pipe, cfg.model)
    # the complete dense cost account of this configuration (FLOPs are the same measured or analytic)
    ops = run_profile(analytic_twin(cfg, batch=len(prompts), out=str(out_dir / "dense-account"))).ops
    run = _Batch(out_dir, cfg, pipe, prompts, labels, DigitClassifier() if labels is not None else None, clip, ops,
                 float(ops.loc[ops["stage"].str.startswith("text_encoder"), "flops"].sum()),
                 {"renormalize": renormalize, "block": block, "rank": rank, "save_masks": save_masks,
                  "repeat": repeat, **tiles}, intervals)
    (out_dir / "images").mkdir(exist_ok=True)
    (out_dir / "records").mkdir(exist_ok=True)
    report("methods", 0, len(todo) + 1)
    rows, masked = [_dense_row(run)], []
    for i, (setting, interval) in enumerate(todo):
        report("methods", i + 1, len(todo) + 1)
        row, calls = _setting_row(run, setting, interval)
        rows.append(row)
        masked = masked or (masked_note(calls) if calls else [])
    report("methods", len(todo) + 1, len(todo) + 1)
    joint = (run.attention["attn_kind"] == "joint").any() and any(s.attention is not None for s, _ in todo)
    return _write(run, rows, ([JOINT_NOTE] if joint else []) + masked)


def _dense_row(run: _Batch) -> dict:
    warm_s = warm_up(run.pipe, run.cfg, run.prompts)
    run.dense = dense = _timed(run.pipe, run.cfg, run.prompts, run.options["repeat"])
    _save_grid(dense["images"], run.out_dir / "images" / "dense.png")
    acc = approximate_account(run.ops, None, images=len(run.prompts))
    conventions = {"denoiser_macs_conv_linear": acc["macs_conv_linear"].get("denoiser", 0.0),
                   "denoiser_flops_per_image_and_eval": acc["per_image_and_eval"]["flops"],
                   "denoiser_macs_per_image_and_eval": acc["per_image_and_eval"]["macs_conv_linear"],
                   "records": "dense-account/ops.parquet"}
    return {"method": "dense", "param": "", "value": None, "attention_flops": float(run.attention["flops"].sum()),
            **conventions,
            "attention_share_saved": 0.0, "end_to_end_share_saved": 0.0, "kept_fraction": 1.0,
            **_seconds(dense), "warmup_s": warm_s, "kernel": "dense", "psnr": None, "identical": True,
            "identical_images": len(run.prompts), "ssim": 1.0, **run.scores(dense["images"]),
            "latent_rel_error": [0.0] * len(dense["latents"]), "image": "images/dense.png"}


def _setting_row(run: _Batch, setting, interval: int) -> tuple[dict, list | None]:
    """One setting (at one mask interval) generated, timed, scored against dense, its image and masks saved."""
    cfg, opts = run.cfg, run.options
    method, value = setting.attention or (setting.reuse.name, setting.reuse.value)
    core, warm_s = None, 0.0
    if setting.attention is not None:
        core = ApproxAttention(*setting.attention, renormalize=opts["renormalize"], block=opts["block"],
                               rank=opts["rank"], seed=cfg.seed, mask_interval=interval, tile=opts.get("tile"),
                               grid=opts.get("grid"))
        warm_s = warm_up(run.pipe, cfg, run.prompts, core)
        core.save_masks = opts["save_masks"]
    with installed_setting(run.pipe, setting, None):
        res = _timed(run.pipe, cfg, run.prompts, opts["repeat"], core)
    calls = core.calls if core is not None else None
    records: list = []
    flops = _flops(cfg, run.pipe, setting, calls, run.ops, run.prompts, run.text, run.attention, records)
    name = (f"{method}_{PARAM[method]}_{value:g}" if setting.reuse is None
            else setting.text.replace("=", "_").replace(":", "_"))
    label = setting.text
    if interval > 1 and len(run.intervals) > 1:  # the setting with its masks reused, beside the same setting
        # predicting every step: its own row, image and masks (one interval alone keeps the plain names)
        name, label = f"{name}_every_{interval}", f"{setting.text} mask every {interval}"
    _save_grid(res["images"], run.out_dir / "images" / f"{name}.png")
    write_ops(run.out_dir / "records", records[0], f"{name}.parquet")  # the setting's records, as its account sums
    if opts["save_masks"] and core is not None:  # what the method kept: masks/<name>/, the method's value as tau
        write_masks(run.out_dir / "masks" / name, core.masks, (opts["block"],), (value,),
                    meta={"source": "approx", "method": method, "param": PARAM[method], "value": value})
    q = quality(run.dense, res)
    return {"method": method, "param": PARAM.get(method) or setting.reuse.param, "value": value, "setting": label,
            "mask_interval": interval if method == "block" else None, **flops, **_seconds(res), "warmup_s": warm_s,
            "kernel": kernels_used(calls) if calls else "dense", "psnr": q["psnr"], "identical": q["identical"],
            "identical_images": q["identical_images"], "ssim": q["ssim"], **run.scores(res["images"]),
            "latent_rel_error": q["latent_rel_error"], "image": f"images/{name}.png",
            "records": f"records/{name}.parquet"}, calls


def _write(run: _Batch, rows: list[dict], notes: list[str]) -> dict:
    """``approx.parquet`` and ``approx.json`` (with its findings)."""
    import pandas as pd

    cfg, opts = run.cfg, run.options
    table = pd.DataFrame(rows)
    atomic_write(run.out_dir / "approx.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    # the analytic run encodes one prompt for the whole batch; the quality batch encodes each of its prompts
    total_flops = float(run.ops["flops"].sum()) + run.text * (len(run.prompts) - 1)
    state = {"model": cfg.model, "height": cfg.height, "frames": cfg.frames,
             "tile": list(opts["tile"]) if opts.get("tile") else None,
             "width": cfg.width, "steps": cfg.steps, "guidance": cfg.guidance, "seed": cfg.seed,
             "prompts": run.prompts, "renormalize": opts["renormalize"], "block": opts["block"], "rank": opts["rank"],
             "mask_interval": run.intervals[0], "repeat": opts["repeat"], "mask_intervals": run.intervals,
             "random_weights": cfg.random_weights, "total_flops": total_flops, "results": rows,
             "run_dir": str(run.out_dir), "notes": notes + _notes(cfg, rows, opts["repeat"])}
    state["findings"] = approx_findings(state)
    write_document(run.out_dir, ApproxDocument.from_fields(state))
    return state


def _flops(cfg, pipe, setting, calls, dense, prompts: list[str], text: float, unet_attn, records: list) -> dict:
    """A setting's FLOPs against dense over the quality batch: ``dense`` is the analytic account (one prompt's text
    encoding for the batch; ``text`` FLOPs each further prompt adds). Approximate attention re-weights the dense
    records; a reuse method's records are those that ran (:func:`~diffprobe.run.setting.reuse_records`). The records
    the account sums are appended to ``records``."""
    extra = text * (len(prompts) - 1)  # the other prompts' text encodings, which the analytic records lack
    ran = dense
    if setting.reuse is not None:
        ran = reuse_records(cfg, pipe, setting.reuse, count_denoiser_evals(pipe, cfg.steps, "cpu"), tuple(prompts))
    acc = approximate_account(ran, calls, dense=dense, images=len(prompts))
    encoded = extra if setting.reuse is None or not setting.reuse.data_dependent else 0.0  # traced: all encoded
    mine, theirs = acc["per_image_and_eval"], acc["dense_per_image_and_eval"]
    out = {"attention_flops": acc["attention_flops"], "attention_share_saved": acc["attention_share_saved"],
           "end_to_end_share_saved": end_to_end_saved(acc["flops_total"] + encoded, acc["dense_flops_total"] + extra),
           "kept_fraction": acc["kept_fraction"],
           "predictor_flops": acc["flops_by_layer_type"].get("attn_predictor", 0.0),
           # the literature's conventions: the denoiser's conv + linear MACs, and per image per evaluation
           "denoiser_macs_conv_linear": acc["macs_conv_linear"].get("denoiser", 0.0),
           "dense_denoiser_macs_conv_linear": acc["dense_macs_conv_linear"].get("denoiser", 0.0),
           "denoiser_flops_per_image_and_eval": mine["flops"],
           "denoiser_macs_per_image_and_eval": mine["macs_conv_linear"],
           "dense_denoiser_flops_per_image_and_eval": theirs["flops"],
           "dense_denoiser_macs_per_image_and_eval": theirs["macs_conv_linear"]}
    records.append(scaled_records(ran, calls))
    if setting.reuse is None:
        calls_acc = account(calls)
        if abs(calls_acc["dense_flops"] - unet_attn["flops"].sum()) > 1e-6 * calls_acc["dense_flops"]:
            raise DiffprobeError("internal: approximate attention saw other attention calls than the cost account "
                                 f"({calls_acc['dense_flops']} vs {unet_attn['flops'].sum()} dense FLOPs)")
        by_kind = calls_acc["by_kind"]
        return {**out, **{f"{k}_share_saved": by_kind[k]["share_saved"] for k in ("self", "cross")}}
    return {**out, "denoiser_flops_saved": acc["flops_saved_by_stage"].get("denoiser", 0.0)}


def _timed(pipe, cfg, prompts: list[str], repeat: int, core=None) -> dict:
    """``repeat`` generations of the same prompts from the same noise (so the same images): the last one's images,
    latents and the core's calls and masks, with the median denoiser seconds and their spread."""
    import statistics

    runs = []
    for _ in range(repeat):
        if core is not None:  # each run's account and masks from a fresh start, as the first had
            core.reset()
            core.masks = []
        runs.append(generate(pipe, cfg, prompts, core.core if core is not None else None))
    res = runs[-1]
    secs = [r["denoiser_s"] for r in runs]
    res.update(denoiser_s=statistics.median(secs), denoiser_s_min=min(secs), denoiser_s_max=max(secs), runs=len(secs),
               wall_s=statistics.median(r["wall_s"] for r in runs))
    return res


def _seconds(res: dict) -> dict:
    return {k: res[k] for k in ("denoiser_s", "denoiser_s_min", "denoiser_s_max", "runs", "wall_s")}


NOISY = 1.25  # a row whose slowest run took this much longer than its fastest: the seconds are noise-dominated


def _notes(cfg, rows: list[dict], repeat: int) -> list[str]:
    """What a reader must know to read the seconds: how many runs each is, and rows whose runs disagree."""
    notes = []
    if repeat == 1:
        notes.append("seconds: one timed run per row (no spread measured); --repeat N times every row N times and "
                     "reports the median with its min–max")
    noisy = [r.get("setting") or r["method"] for r in rows if r["denoiser_s_min"] > 0
             and r["denoiser_s_max"] / r["denoiser_s_min"] > NOISY]
    if noisy:
        notes.append(f"seconds: the runs of {', '.join(noisy)} differ by more than {100 * (NOISY - 1):.0f}% "
                     "(a busy machine?): compare seconds with care")
    return notes


GRID_MOST = 40  # images (a video's frames) in one grid at most: the first ones


def _save_grid(images: torch.Tensor, path: Path) -> None:
    """The batch as one row-major grid PNG (10 columns at most; the first :data:`GRID_MOST` images)."""
    from PIL import Image

    images = images[:GRID_MOST]
    n, c, h, w = images.shape
    cols = min(10, n)
    rows = -(-n // cols)
    grid = torch.ones(c, rows * h, cols * w)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    arr = (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    Image.fromarray(arr).save(path)
