"""``diffprobe sparsity``: probe every UNet attention call of a measured run, at one or more resolutions.

Each resolution is a point folder (``points/<H>x<W>/``: the profile run and its ``sparsity.parquet``) filled by
the same point loop as a sweep (:mod:`diffprobe.run.points`): atomic, resumable, locked, and refused when made
with another configuration. At the end ``sparsity.parquet`` (one row per resolution × step × layer × head) and
``sparsity.json`` summarize every point.
"""

from __future__ import annotations

import json
import shutil
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
from diffprobe.run.points import SweepFolder, run_points
from diffprobe.run.profile import build_pipeline, check_memory, check_resolution, run_profile


def run_sparsity(base, resolutions: list[tuple[int, int]], sc: SparsityConfig, out: str | Path,
                 progress=None) -> dict:
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
    folder = SweepFolder(out, identity, SparsityDocument, required=("sparsity.parquet",))
    state = folder.open()
    try:
        return _probe_points(folder, state, base, spec, resolutions, sc, progress or (lambda *_: None))
    finally:
        folder.close()


def _probe_points(folder: SweepFolder, state: dict, base, spec, resolutions, sc: SparsityConfig, report) -> dict:
    random = base.random_weights
    state.update({"config": folder.identity,
                  "model": base.model, "prompt": base.prompt, "steps": base.steps, "guidance": base.guidance,
                  "random_weights": random, "note": RANDOM_NOTE if random else None, "eps": list(sc.eps),
                  "taus": list(sc.taus), "blocks": list(sc.blocks), "max_elements_per_chunk": sc.max_elements,
                  "tiles": ["x".join(map(str, t)) for t in sc.tiles] or None,
                  "run_dir": str(folder.path), "complete": False})
    folder.save(state)
    sizes = {f"{h}x{w}": (h, w) for h, w in resolutions}
    pipes: list = []

    def work(name: str, tmp: Path) -> None:
        h, w = sizes[name]
        if not pipes:
            pipes.append(build_pipeline(base, spec))
        probe = SparsityProbe(sc, spec.token_grid(h, w, base.frames) if spec.video else None)
        with installed_in(pipes[0], probe.core):
            run_profile(replace(base, height=h, width=w, out=str(tmp)), pipe=pipes[0])
        frame = pd.DataFrame(probe.rows)
        frame.insert(0, "width", w)
        frame.insert(0, "height", h)
        if sc.save_masks:  # masks/ first: the parquet file marks the point finished
            write_masks(tmp, probe.masks, sc.blocks, sc.taus, meta={"source": "sparsity"})
        atomic_write(tmp / "sparsity.parquet", lambda p: frame.to_parquet(p, index=False))

    run_points(folder, list(sizes), work, report, "resolutions")
    shutil.rmtree(folder.path / ".partial", ignore_errors=True)
    frames, runs = [], []
    for name, (h, w) in sizes.items():
        point_dir = folder.point_dir(name)
        frames.append(pd.read_parquet(point_dir / "sparsity.parquet"))
        run = json.loads((point_dir / "run.json").read_text(encoding="utf-8"))
        runs.append({"height": h, "width": w, "dir": f"points/{name}", "image": run.get("image"),
                     "denoiser_evals_measured": run.get("denoiser_evals_measured")})
    table = pd.concat(frames, ignore_index=True)
    atomic_write(folder.path / "sparsity.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    overlap = {}
    for name in sizes:  # block-mask stability across steps (from each point's mask store)
        if (folder.point_dir(name) / "masks" / "index.json").exists():
            overlap[name] = step_overlap(MaskStore(folder.point_dir(name)), sc.blocks, sc.taus)
    state.update(points=runs, summary=summarize(table), mask_step_overlap=overlap or None, complete=True)
    state["findings"] = sparsity_headline(state)
    folder.save(state)
    return state
