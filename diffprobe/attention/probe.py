"""``diffprobe sparsity``: statistics of every UNet attention call's probabilities, per layer × head × step.

The probe is an attention core (see :mod:`diffprobe.attention.core`) that returns exactly the dense SDPA output,
so the run and its image are unchanged, and on the side recomputes the probabilities in query chunks
(:mod:`diffprobe.attention.stats`) to accumulate their statistics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch.nn.functional as F

from diffprobe.attention.core import CallInfo, installed
from diffprobe.attention.stats import HeadStats, probabilities_in_chunks
from diffprobe.errors import DiffprobeError

RANDOM_NOTE = ("random weights: attention on untrained weights is near-uniform, so these sparsity figures say "
               "nothing about a trained model; use --model digits or --weights")


def parse_floats(text: str, flag: str, low: float, high: float, high_open: bool) -> tuple[float, ...]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise DiffprobeError(f"{flag} is empty; give a comma list")
    try:
        values = tuple(float(t) for t in items)
    except ValueError:
        raise DiffprobeError(f"cannot parse {flag} {text!r}; give numbers such as 1e-3,1e-2") from None
    for v in values:
        ok = low <= v < high if high_open else low < v <= high
        if not ok:
            bounds = f"[{low:g}, {high:g})" if high_open else f"({low:g}, {high:g}]"
            raise DiffprobeError(f"{flag} value {v:g} is outside {bounds}")
    return values


@dataclass
class SparsityConfig:
    eps: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    taus: tuple[float, ...] = (0.9, 0.95, 0.99)
    blocks: tuple[int, ...] = (32, 64, 128)
    max_elements: int = 2**22

    def validate(self) -> "SparsityConfig":
        if any(b <= 0 for b in self.blocks):
            raise DiffprobeError("--blocks values must be positive block sides (tokens)")
        if any(not (0 <= e < 1) for e in self.eps):
            raise DiffprobeError("--eps values must be in [0, 1)")
        if any(not (0 < t <= 1) for t in self.taus):
            raise DiffprobeError("--tau values must be in (0, 1]")
        return self


class SparsityProbe:
    """An attention core: dense output, statistics on the side; ``rows`` holds one dict per layer×head×call."""

    def __init__(self, sc: SparsityConfig):
        self.sc = sc
        self.rows: list[dict] = []
        self.calls: Counter[str] = Counter()

    def core(self, q, k, v, attn_mask, call: CallInfo):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        stats = HeadStats(call.heads, call.k_tokens, self.sc.eps, self.sc.taus, self.sc.blocks)
        for p in probabilities_in_chunks(q, k, self.sc.blocks, attn_mask, self.sc.max_elements):
            stats.add(p)
        from diffprobe.records.tracer import unet_level

        step = self.calls[call.name]
        self.calls[call.name] += 1
        level = unet_level(f"unet.{call.name}")
        for row in stats.result():
            self.rows.append({"layer": call.name, "level": level, "attn_kind": call.kind, "step": step,
                              "q_tokens": call.q_tokens, "k_tokens": call.k_tokens, **row})
        return out


def run_sparsity(base, resolutions: list[tuple[int, int]], sc: SparsityConfig, out: str | Path,
                 progress=None) -> dict:
    """Probe the UNet attention of ``base`` (a ProfileConfig, measured) at each resolution.

    Like a sweep, each resolution is a point folder (``points/<H>x<W>/``: the profile run and its
    ``sparsity.parquet``) committed atomically, so re-running the same command skips finished resolutions and a
    folder made with another configuration is refused. At the end ``sparsity.parquet`` (one row per resolution ×
    step × layer × head) and ``sparsity.json`` summarize every point."""
    from dataclasses import asdict

    from diffprobe.models.registry import get_spec
    from diffprobe.run.profile import check_resolution
    from diffprobe.run.sweep import SweepFolder

    sc.validate()
    if base.mode != "measured":
        raise DiffprobeError("sparsity needs the probabilities' values: use --mode measured (the default)")
    spec = get_spec(base.model)
    for h, w in resolutions:
        check_resolution(spec, h, w)
    base = replace(base, height=resolutions[0][0], width=resolutions[0][1], trace_ops=False).resolved()
    identity = {k: v for k, v in asdict(base).items() if k not in ("height", "width", "out")}
    identity.update(eps=list(sc.eps), taus=list(sc.taus), blocks=list(sc.blocks))
    folder = SweepFolder(out, identity, meta_name="sparsity.json", required=("sparsity.parquet",))
    state = folder.open()
    try:
        return _probe_points(folder, state, base, spec, resolutions, sc, progress)
    finally:
        folder.close()


def _probe_points(folder, state: dict, base, spec, resolutions, sc: SparsityConfig, progress) -> dict:
    import json
    import shutil

    import pandas as pd

    from diffprobe.records.runfolder import atomic_write
    from diffprobe.records.schema import SCHEMA_VERSION
    from diffprobe.run.profile import build_pipeline, run_profile

    identity = folder.identity
    random = base.weights is None and not spec.trained
    state.update({"schema_version": SCHEMA_VERSION, "kind": "sparsity", "config": identity, "model": base.model,
                  "prompt": base.prompt, "steps": base.steps, "guidance": base.guidance, "random_weights": random,
                  "note": RANDOM_NOTE if random else None, "eps": list(sc.eps), "taus": list(sc.taus),
                  "blocks": list(sc.blocks), "max_elements_per_chunk": sc.max_elements, "run_dir": str(folder.path),
                  "complete": False})
    folder.save(state)
    report = progress or (lambda *_: None)
    pipe = None
    frames, runs = [], []
    for i, (h, w) in enumerate(resolutions):
        report("resolutions", i, len(resolutions))
        name = f"{h}x{w}"
        if not folder.finished(name):
            pipe = pipe or build_pipeline(base, spec)
            tmp = folder.partial_dir(name)
            probe = SparsityProbe(sc)
            with installed(pipe.unet, probe.core):
                run_profile(replace(base, height=h, width=w, out=str(tmp)), pipe=pipe)
            frame = pd.DataFrame(probe.rows)
            frame.insert(0, "width", w)
            frame.insert(0, "height", h)
            atomic_write(tmp / "sparsity.parquet", lambda p, f=frame: f.to_parquet(p, index=False))
            folder.commit(name, tmp)
        point_dir = folder.point_dir(name)
        frames.append(pd.read_parquet(point_dir / "sparsity.parquet"))
        run = json.loads((point_dir / "run.json").read_text(encoding="utf-8"))
        runs.append({"height": h, "width": w, "dir": f"points/{name}", "image": run.get("image"),
                     "unet_evals_measured": run.get("unet_evals_measured")})
    report("resolutions", len(resolutions), len(resolutions))
    shutil.rmtree(folder.path / ".partial", ignore_errors=True)
    table = pd.concat(frames, ignore_index=True)
    atomic_write(folder.path / "sparsity.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    state.update(points=runs, summary=summarize(table), complete=True)
    folder.save(state)
    return state


def _means(frame, key: str) -> dict:
    cols = [c for c in frame.columns if c not in ("height", "width", "layer", "level", "attn_kind", "step",
                                                  "q_tokens", "k_tokens", "head")]
    return {str(k): {c: float(v) for c, v in g[cols].mean().items()} for k, g in frame.groupby(key, sort=False)}


def summarize(table) -> dict:
    """Means of every statistic by resolution, then within each by self/cross, UNet level and step."""
    out = {}
    for (h, w), g in table.groupby(["height", "width"], sort=False):
        out[f"{h}x{w}"] = {"by_kind": _means(g, "attn_kind"), "by_level": _means(g, "level"),
                           "by_step": _means(g, "step"), "calls": int(len(g))}
    return out
