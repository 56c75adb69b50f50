"""``approx --prompts FILE``: the quality of every setting against dense over many prompts, at scale.

Each image is one (prompt, seed) pair; dense and every setting start from that seed's noise, so any difference is the
method's. Images are generated in chunks of ``chunk`` images; a chunk is the unit of work: in this process (the
local executor), or one batch of a Ray Data pipeline whose actors each hold one pipeline (``map_batches`` over the
chunks with an actor pool, :func:`_on_ray`). A chunk returns, per image and setting, PSNR and SSIM against the dense
image, the CLIP score against its prompt (``--clip-weights``), the digit classifier's verdict (``digits``) and the
Inception features of FID (``--inception-weights``); its PNGs go into the run folder (``campaign/<setting>/``). The
driver then reduces them: means with 95% confidence intervals over images (Student's t; Wilson's for the digit
share), FID of each setting's image set against dense's and against a reference folder.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffprobe.errors import DiffprobeError

PROMPTS_MOST = 1_000_000


def read_prompts(path: str | Path) -> list[tuple[str, int | None]]:
    """The prompts of ``path``: one per line, or JSON Lines with ``prompt`` and an optional integer ``seed``
    (a file whose first line starts with ``{``); blank lines are skipped. Every fault is one line naming the line."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffprobeError(f"--prompts {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    entries = [(i + 1, line.strip()) for i, line in enumerate(lines) if line.strip()]
    if not entries:
        raise DiffprobeError(f"--prompts {path} holds no prompt (one a line, or JSON Lines with \"prompt\")")
    if len(entries) > PROMPTS_MOST:
        raise DiffprobeError(f"--prompts {path} holds {len(entries)} prompts, more than {PROMPTS_MOST}")
    if not entries[0][1].startswith("{"):
        return [(text, None) for _, text in entries]
    out = []
    for no, text in entries:
        try:
            row = json.loads(text)
        except ValueError as exc:
            raise DiffprobeError(f"--prompts {path} line {no}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise DiffprobeError(f"--prompts {path} line {no}: needs a non-empty string \"prompt\"")
        seed = row.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63):
            raise DiffprobeError(f"--prompts {path} line {no}: \"seed\" must be a non-negative integer, got {seed!r}")
        out.append((row["prompt"], seed))
    return out


def campaign_items(prompts: list[tuple[str, int | None]], per_prompt: int, seed: int) -> list[dict]:
    """Every image of the campaign: ``index``, ``prompt`` and ``seed`` (a prompt's own seed, then seed + 1, ...; a
    prompt without one: the run's ``seed`` plus the image's index)."""
    items = []
    for text, own in prompts:
        for j in range(per_prompt):
            index = len(items)
            items.append({"index": index, "prompt": text, "seed": (own + j) if own is not None else seed + index})
    return items


@dataclass(frozen=True)
class Campaign:
    """What every chunk needs, and nothing built: it travels to Ray actors, which build their own pipeline and
    scorers. ``settings``: (name, setting text, mask interval) of each setting; ``options``: the attention methods'
    (renormalize, block, rank, tile, grid)."""

    cfg: object
    settings: tuple
    options: dict
    folder: str  # the run folder: its campaign/ images are written there
    clip_weights: str | None = None
    inception_weights: str | None = None
    digits: bool = False


class ChunkRunner:
    """Runs chunks of a campaign with one pipeline and one set of scorers (built on first use)."""

    def __init__(self, campaign: Campaign):
        self.c = campaign
        self.cache: dict = {}
        self._scorers = None

    def scorers(self):
        if self._scorers is None:
            from diffprobe.attention.clipscore import ClipScorer
            from diffprobe.models.digits import DigitClassifier
            from diffprobe.models.inception import InceptionFeatures

            c = self.c
            self._scorers = (ClipScorer(c.clip_weights) if c.clip_weights else None,
                             InceptionFeatures(c.inception_weights) if c.inception_weights else None,
                             DigitClassifier() if c.digits else None)
        return self._scorers

    def run(self, items: list[dict]) -> list[dict]:
        """One chunk: dense and every setting on ``items``; a row per image and setting."""
        from diffprobe.records.storage import Store
        from diffprobe.run.points import cached_pipeline

        c = self.c
        pipe = cached_pipeline(self.cache, c.cfg)
        store = Store(c.folder)
        prompts, seeds = [it["prompt"] for it in items], [it["seed"] for it in items]
        dense = self._images(pipe, None, 1, prompts, seeds)
        rows = []
        for name, text, interval in (("dense", None, 1), *c.settings):
            images = dense if text is None else self._images(pipe, text, interval, prompts, seeds)
            rows += self._score(items, name, images, dense, store)
        return rows

    def _images(self, pipe, text: str | None, interval: int, prompts, seeds):
        from diffprobe.attention.approx import ApproxAttention
        from diffprobe.run.generation import generate
        from diffprobe.run.setting import installed_setting
        from diffprobe.run.settings import parse_settings

        cfg, o = self.c.cfg, self.c.options
        if text is None:
            return generate(pipe, cfg, prompts, seeds=seeds)["images"]
        setting = parse_settings(text)
        core = None
        if setting.attention is not None:
            core = ApproxAttention(*setting.attention, renormalize=o["renormalize"], block=o["block"], rank=o["rank"],
                                   seed=cfg.seed, mask_interval=interval, tile=o.get("tile"), grid=o.get("grid"))
        with installed_setting(pipe, setting, None):
            return generate(pipe, cfg, prompts, core.core if core is not None else None, seeds=seeds)["images"]

    def _score(self, items, name: str, images, dense, store) -> list[dict]:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        clip, inception, classifier = self.scorers()
        prompts = [it["prompt"] for it in items]
        clip_scores = clip.scores(images, prompts).tolist() if clip else [None] * len(items)
        features = inception.features(images) if inception else None
        digits = classifier.predict(images) if classifier else None
        rows = []
        for k, it in enumerate(items):
            x, y = dense[k].permute(1, 2, 0).numpy(), images[k].permute(1, 2, 0).numpy()
            same = bool(np.array_equal(x, y))
            win = min(7, min(x.shape[:2]) // 2 * 2 - 1)
            rows.append({"index": it["index"], "prompt": it["prompt"], "seed": it["seed"], "setting": name,
                         "identical": same,
                         "psnr": None if same else float(peak_signal_noise_ratio(x, y, data_range=1.0)),
                         "ssim": float(structural_similarity(x, y, data_range=1.0, channel_axis=2, win_size=win)),
                         "clip_score": clip_scores[k], "digit": int(digits[k]) if digits is not None else None,
                         "features": features[k].tolist() if features is not None else None,
                         "image": f"campaign/{name}/{it['index']:06d}.png"})
            store.write_bytes(rows[-1]["image"], _png(images[k]))
        return rows


def _png(image) -> bytes:
    from PIL import Image

    arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def chunks_of(items: list[dict], size: int) -> list[list[dict]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_chunks(campaign: Campaign, chunks: list[list[dict]], executor, progress) -> list[dict]:
    """Every chunk's rows, in chunk order, on ``executor`` (local: one after another here; ray: Ray Data)."""
    if executor.kind == "ray":
        return _on_ray(campaign, chunks, executor, progress)
    runner, rows = ChunkRunner(campaign), []
    for i, chunk in enumerate(chunks):
        progress("prompts", sum(map(len, chunks[:i])), sum(map(len, chunks)))
        rows += runner.run(chunk)
    progress("prompts", sum(map(len, chunks)), sum(map(len, chunks)))
    return rows


class _Actor:
    """A Ray Data actor: one pipeline, many chunks."""

    def __init__(self, campaign: Campaign, threads: int):
        import torch

        if threads >= 1:
            torch.set_num_threads(threads)
        self.runner = ChunkRunner(campaign)

    def __call__(self, batch):
        import pandas as pd

        rows = []
        for chunk_id, items in zip(batch["chunk"], batch["items"], strict=True):
            rows += [{**r, "chunk": int(chunk_id)} for r in self.runner.run(json.loads(items))]
        frame = pd.DataFrame(rows)
        frame["features"] = frame["features"].map(json.dumps)  # a list or None, as text: one column type
        return frame


def _on_ray(campaign: Campaign, chunks: list[list[dict]], executor, progress) -> list[dict]:
    import logging

    from diffprobe.run.ray_executor import connect, disconnect

    started = connect(executor.address)
    try:
        import ray
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        res = executor.resources(campaign.cfg.device, analytic=False)
        total = ray.cluster_resources()
        unit, want = ("GPU", res["num_gpus"]) if res["num_gpus"] else ("CPU", res["num_cpus"])
        actors = max(1, min(len(chunks), int(total.get(unit, 0) // want)))
        if total.get(unit, 0) < want:
            raise DiffprobeError(f"each actor asks for {want:g} {unit}, and the Ray cluster has "
                                 f"{total.get(unit, 0):g}: lower --{unit.lower()}s-per-point")
        ds = ray.data.from_items([{"chunk": i, "items": json.dumps(c)} for i, c in enumerate(chunks)],
                                 override_num_blocks=len(chunks))
        out = ds.map_batches(_Actor, fn_constructor_args=(campaign, int(res["num_cpus"])), batch_size=1,
                             batch_format="numpy", concurrency=actors, num_cpus=res["num_cpus"],
                             num_gpus=res["num_gpus"] or None)
        images, done, rows = sum(map(len, chunks)), set(), []
        progress("prompts", 0, images, f"{actors} actors on Ray")
        for frame in out.iter_batches(batch_size=None, batch_format="pandas"):
            for r in frame.to_dict("records"):
                r["features"] = json.loads(r["features"])
                rows.append(r)
                done.add(r["chunk"])
            progress("prompts", sum(len(chunks[i]) for i in done), images, f"{actors} actors on Ray")
        rows.sort(key=lambda r: (r["chunk"], _order(campaign, r["setting"]), r["index"]))
        for r in rows:
            del r["chunk"]
        return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
    finally:
        disconnect(started)


def _order(campaign: Campaign, name: str) -> int:
    return 0 if name == "dense" else 1 + [s[0] for s in campaign.settings].index(name)


def summarize(rows: list[dict], campaign: Campaign, reference: np.ndarray | None) -> list[dict]:
    """Per setting: means with 95% intervals over its images, the digit share, FID against dense and the
    reference."""
    from diffprobe.analyses.fid import fid, mean_ci, share_ci

    by = {}
    for r in rows:
        by.setdefault(r["setting"], []).append(r)
    dense = by["dense"]
    out = []
    labels = {"dense": "dense",
              **{name: text + (f" mask every {n}" if n > 1 else "") for name, text, n in campaign.settings}}
    for name in labels:
        mine = by[name]
        feats = np.array([r["features"] for r in mine]) if campaign.inception_weights else None
        row = {"setting": name, "label": labels[name], "images": len(mine),
               "identical_images": sum(r["identical"] for r in mine),
               "psnr": mean_ci(r["psnr"] for r in mine), "ssim": mean_ci(r["ssim"] for r in mine),
               "clip_score": mean_ci(r["clip_score"] for r in mine) if campaign.clip_weights else None,
               "fid_vs_dense": fid(feats, np.array([r["features"] for r in dense])) if feats is not None and
               len(mine) > 1 else None,
               "fid_vs_reference": fid(feats, reference) if feats is not None and reference is not None and
               len(mine) > 1 else None}
        if campaign.digits:
            from diffprobe.models.digits import label_of

            asked = [(label_of(r["prompt"]), r["digit"]) for r in mine]
            scored = [(a, d) for a, d in asked if a is not None]
            row["accuracy"] = share_ci(sum(a == d for a, d in scored), len(scored))
        out.append(row)
    return out


def reference_features(folder: str | Path, inception_weights: str) -> np.ndarray:
    """Inception features of every image (PNG, JPEG) in ``folder``."""
    import torch
    from PIL import Image

    from diffprobe.models.inception import InceptionFeatures

    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")) \
        if folder.is_dir() else []
    if len(files) < 2:
        raise DiffprobeError(f"--reference-images {folder} holds {len(files)} images (PNG or JPEG); FID needs two "
                             "or more")
    net = InceptionFeatures(inception_weights)
    feats = []
    for i in range(0, len(files), 32):
        batch = [np.asarray(Image.open(f).convert("RGB").resize((299, 299), Image.BICUBIC)) for f in files[i:i + 32]]
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255
        feats.append(net.features(x))
    return np.concatenate(feats)



@dataclass(frozen=True)
class CampaignRequest:
    """``approx --prompts``: the prompts file, images per prompt, chunk size, the Inception detector and reference
    folder for FID, and the executor of the chunks."""

    prompts: str
    images_per_prompt: int = 1
    inception_weights: str | None = None
    reference_images: str | None = None
    chunk: int = 8
    executor: object = None  # an Executor; None: local

    def entries(self) -> list[tuple[str, int | None]]:
        """The prompts, every option checked first (before any work)."""
        if self.images_per_prompt < 1:
            raise DiffprobeError(f"--images-per-prompt must be at least 1, got {self.images_per_prompt}")
        if self.chunk < 1:
            raise DiffprobeError(f"--prompt-batch must be at least 1, got {self.chunk}")
        if self.reference_images is not None and self.inception_weights is None:
            raise DiffprobeError("--reference-images needs --inception-weights (FID is computed on its features)")
        entries = read_prompts(self.prompts)
        if self.inception_weights is not None:
            from diffprobe.models.inception import InceptionFeatures

            InceptionFeatures(self.inception_weights)  # a wrong file is refused before any image is made
        return entries


def run_campaign(req: CampaignRequest, entries, folder: Path, cfg, todo: list, options: dict,
                 clip_weights: str | None, digits: bool, progress) -> dict:
    """Generate and score every image of the campaign, write ``campaign.parquet``; the summary for ``approx.json``."""
    import pandas as pd

    from diffprobe.records.runfolder import atomic_write
    from diffprobe.run.executor import Executor

    executor = req.executor or Executor()
    many = len({n for _, n in todo}) > 1
    settings = tuple((setting_name(s.text, n, many), s.text, n) for s, n in todo)
    campaign = Campaign(cfg, settings, options, str(folder), clip_weights, req.inception_weights, digits)
    items = campaign_items(entries, req.images_per_prompt, cfg.seed)
    reference = reference_features(req.reference_images, req.inception_weights) if req.reference_images else None
    rows = run_chunks(campaign, chunks_of(items, req.chunk), executor, progress)
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "features"} for r in rows])
    atomic_write(folder / "campaign.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    return {"prompts_file": str(req.prompts), "prompts": len(entries), "images_per_prompt": req.images_per_prompt,
            "images": len(items), "chunk": req.chunk, "executor": executor.kind,
            "inception_weights": req.inception_weights, "reference_images": req.reference_images,
            "reference_count": None if reference is None else len(reference),
            "settings": summarize(rows, campaign, reference), "rows": "campaign.parquet",
            "notes": campaign_notes(len(items), req.inception_weights is not None)}


def setting_name(text: str, interval: int, many: bool) -> str:
    """A setting's name in file paths (as approx's rows name their images)."""
    name = text.replace("=", "_").replace(":", "_").replace("+", "_")
    return f"{name}_every_{interval}" if many and interval > 1 else name


def campaign_notes(images: int, fid: bool) -> list[str]:
    notes = ["means over images with 95% confidence intervals (Student's t; the digit share: Wilson's); PSNR leaves "
             "out images identical to dense (infinite PSNR), counted in identical_images"]
    if fid and images < 2048:
        notes.append(f"FID rests on {images} images per set, fewer than the 2,048 Inception features: the "
                     "covariances are singular and FID is biased upwards; compare settings at equal image counts")
    return notes
