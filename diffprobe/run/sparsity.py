"""``diffprobe sparsity``: probe every UNet attention call of a measured run, at one or more resolutions.

Each resolution is a point folder (``points/<H>x<W>/``: the profile run and its ``sparsity.parquet``) filled by
the same point loop as a sweep (:mod:`diffprobe.run.points`): atomic, resumable, locked, and refused when made
with another configuration. At the end ``sparsity.parquet`` (one row per resolution × step × layer × head) and
``sparsity.json`` summarize every point.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from diffprobe.analyses.findings import sparsity_headline
from diffprobe.analyses.sparsity import step_overlap, summarize
from diffprobe.attention.core import installed_in
from diffprobe.attention.probe import RANDOM_NOTE, SparsityConfig, SparsityProbe
from diffprobe.attention.tiles import check_tiles
from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import get_spec
from diffprobe.records.documents import SparsityDocument
from diffprobe.records.masks import MaskStore, write_masks
from diffprobe.records.runfolder import atomic_write
from diffprobe.run.config import check_one_expert
from diffprobe.run.executor import Executor, run_jobs
from diffprobe.run.points import PointJob, SweepFolder, cached_pipeline
from diffprobe.run.profile import check_memory, check_resolution, run_profile


def run_sparsity(base, resolutions: list[tuple[int, int]], sc: SparsityConfig, out: str | Path,
                 progress=None, executor: Executor | None = None) -> dict:
    """Probe the UNet attention of ``base`` (a ProfileConfig, measured) at each resolution; returns the summary
    (also in ``sparsity.json``)."""
    sc.validate()
    if base.mode != "measured":
        raise DiffprobeError("sparsity needs the probabilities' values: use --mode measured (the default)")
    spec = get_spec(base.model)
    for h, w in resolutions:
        check_resolution(spec, h, w)
    check_one_expert(spec, "sparsity")
    check_memory(spec, base.dtype, base.device, analytic=False)  # the probabilities need the model run
    base = replace(base, height=resolutions[0][0], width=resolutions[0][1], trace_ops=False).resolved()
    if sc.tiles:  # 3D tiles: a video model, each tile dividing every point's token grid
        if not spec.video:
            raise DiffprobeError(f"--tiles applies to video models (3D tiles of the latent grid); {base.model} "
                                 "makes images: use --blocks")
        for h, w in resolutions:
            for tile in sc.tiles:
                check_tiles(spec.token_grid(h, w, base.frames), tile)
    identity = {k: v for k, v in asdict(base).items() if k not in ("height", "width", "out", "force")}
    identity.update(eps=list(sc.eps), taus=list(sc.taus), blocks=list(sc.blocks))
    if sc.tiles:
        identity["tiles"] = ["x".join(map(str, t)) for t in sc.tiles]
    executor = (executor or Executor()).check()
    folder = SweepFolder(out, identity, SparsityDocument, required=("sparsity.parquet",))
    state = folder.open()
    try:
        return _probe_points(folder, state, base, resolutions, sc, progress or (lambda *_: None), executor)
    finally:
        folder.close()


def sparsity_point(args: tuple, staging: Path, cache: dict) -> None:
    """One resolution (a :class:`~diffprobe.run.points.PointJob`'s work): the measured run with every denoiser
    attention call probed, its ``sparsity.parquet`` (and masks) beside it."""
    cfg, sc = args
    spec = get_spec(cfg.model)
    pipe = cached_pipeline(cache, cfg)
    probe = SparsityProbe(sc, spec.token_grid(cfg.height, cfg.width, cfg.frames) if spec.video else None)
    with installed_in(pipe, probe.core):
        run_profile(replace(cfg, out=str(staging)), pipe=pipe)
    frame = pd.DataFrame(probe.rows)
    frame.insert(0, "width", cfg.width)
    frame.insert(0, "height", cfg.height)
    if sc.save_masks:  # masks/ first: the parquet file marks the point finished
        write_masks(staging, probe.masks, sc.blocks, sc.taus, meta={"source": "sparsity"})
    atomic_write(staging / "sparsity.parquet", lambda p: frame.to_parquet(p, index=False))


def _probe_points(folder: SweepFolder, state: dict, base, resolutions, sc: SparsityConfig, report,
                  executor: Executor) -> dict:
    random = base.random_weights
    state.update({"config": folder.identity,
                  "model": base.model, "prompt": base.prompt, "steps": base.steps, "guidance": base.guidance,
                  "random_weights": random, "note": RANDOM_NOTE if random else None, "eps": list(sc.eps),
                  "taus": list(sc.taus), "blocks": list(sc.blocks), "max_elements_per_chunk": sc.max_elements,
                  "tiles": ["x".join(map(str, t)) for t in sc.tiles] or None,
                  "run_dir": folder.url, "complete": False})
    folder.save(state)
    sizes = {f"{h}x{w}": (h, w) for h, w in resolutions}
    resources = executor.resources(base.device, analytic=False)
    jobs = [PointJob(name, sparsity_point, (replace(base, height=h, width=w), sc), **resources)
            for name, (h, w) in sizes.items()]
    run_jobs(folder, jobs, executor, report, "resolutions")
    store = folder.store
    store.clear_partial()
    frames, runs = [], []
    for name, (h, w) in sizes.items():
        frames.append(store.read_table(f"points/{name}/sparsity.parquet").to_pandas())
        run = store.read_json(f"points/{name}/run.json")
        runs.append({"height": h, "width": w, "dir": f"points/{name}", "image": run.get("image"),
                     "denoiser_evals_measured": run.get("denoiser_evals_measured")})
    table = pd.concat(frames, ignore_index=True)
    store.write_bytes("sparsity.parquet", _parquet_bytes(table))
    overlap = {}
    for name in sizes:  # block-mask stability across steps (from each point's mask store)
        if store.exists(f"points/{name}/masks/index.json"):
            with _local(store, f"points/{name}") as point:
                overlap[name] = step_overlap(MaskStore(point), sc.blocks, sc.taus)
    state.update(points=runs, summary=summarize(table), mask_step_overlap=overlap or None, complete=True)
    state["findings"] = sparsity_headline(state)
    folder.save(state)
    return state


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


@contextlib.contextmanager
def _local(store, rel: str):
    """A point's folder on this machine: itself on a path, a temporary copy of it from a URL."""
    if store.local is not None:
        yield store.local / rel
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="diffprobe-point-") as tmp:
        yield store.download(rel, Path(tmp))
