"""Sweeps: one profile per (resolution, batch) point (and frames, for a video model), written to a sweep folder
point by point, resumable.

Layout of a sweep folder::

    sweep.json                  configuration, point status, findings (rewritten atomically after each point)
    points/<H>x<W>-b<B>/        a complete profile run folder (run.json, ops.parquet) per finished point
                                (a video model's: <H>x<W>-f<frames>-b<B>)

A point's folder is written under ``.partial/`` and renamed into ``points/`` when complete, so a killed sweep
leaves only whole points; running the same command again skips them. A folder made with another configuration
(model, steps, mode, dtype, ...) is refused rather than mixed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from diffprobe.analyses import roofline
from diffprobe.analyses.findings import sweep_findings
from diffprobe.analyses.sweep import findings, point_summary
from diffprobe.errors import DiffprobeError, interruption
from diffprobe.hardware.presets import get_preset
from diffprobe.models.registry import get_spec
from diffprobe.parsing import parse_ints, parse_resolutions  # noqa: F401  (imported from here too)
from diffprobe.records.runfolder import ops_frame, prepare_out_dir
from diffprobe.records.storage import Store
from diffprobe.run.accel import accel_run, check_accel
from diffprobe.run.config import check_frames
from diffprobe.run.executor import Executor, run_jobs
from diffprobe.run.points import PointJob, SweepFolder, cached_pipeline
from diffprobe.run.profile import ProfileConfig, analytic_twin, check_resolution, run_profile

# what makes two sweeps comparable point by point; resolution and batch are the swept axes, the rest must match
IDENTITY_EXCLUDE = ("height", "width", "batch", "frames", "out", "hardware", "chrome_trace", "force")


@dataclass
class SweepConfig:
    base: ProfileConfig  # every profile flag; height/width/batch/out are set per point
    resolutions: list[tuple[int, int]]  # (height, width)
    batches: list[int] = field(default_factory=lambda: [1])
    out: str | None = None  # None: a new runs/<time>-sweep-<model>
    max_point_seconds: float | None = None  # measured: skip points whose roofline prediction exceeds this
    accel: str | None = None  # accelerator presets (comma list): each point also evaluated on them (accel.json)
    accel_density: float | None = None  # the kept self-attention density for presets that skip attention
    frames: list[int] | None = None  # video models: the frame counts swept (None: the model's default)
    executor: Executor = field(default_factory=Executor)  # who runs the points (local or Ray)

    def with_out(self) -> "SweepConfig":
        """This config with ``out`` set: a new default folder when none was given."""
        if self.out is not None:
            if not str(self.out).strip():
                raise DiffprobeError("--out is empty; name a folder, or leave --out out for "
                                     f"runs/<time>-sweep-{self.base.model}")
            return self

        return replace(self, out=str(prepare_out_dir(None, f"sweep-{self.base.model}")))

    def identity(self) -> dict:
        base = asdict(self.base)
        spec = get_spec(base["model"])
        if base.get("steps") is None:  # the model's defaults, as its points run them
            base["steps"] = spec.default_steps
        if base.get("guidance") is None:
            base["guidance"] = spec.default_guidance
        return {k: v for k, v in base.items() if k not in IDENTITY_EXCLUDE}

    def points(self) -> list[tuple[int, int, int, int | None]]:
        """(height, width, batch, frames) of every point (frames None: the model's own, or an image model)."""
        return [(h, w, b, f) for b in self.batches for f in (self.frames or [None]) for (h, w) in self.resolutions]


def point_name(h: int, w: int, b: int, f: int | None = None) -> str:
    return f"{h}x{w}-b{b}" if f is None else f"{h}x{w}-f{f}-b{b}"


def _predicted_seconds(cfg: ProfileConfig, preset_name: str) -> float:
    """Roofline-predicted seconds of a measured point (its executed UNet steps only), from an analytic pass."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="diffprobe-predict-") as tmp:
        analytic = run_profile(analytic_twin(cfg, out=tmp))
    ops = analytic.ops
    evals = cfg.sample_steps or analytic.denoiser_evals
    ops = ops[~ops["stage"].isin(["denoiser", "scheduler"]) | (ops["step"] < evals)]
    return roofline.prediction(roofline.op_roofline(ops, get_preset(preset_name)))["total_s"]


def run_sweep(sc: SweepConfig, progress=None, log=None) -> dict:
    """Run (or resume) a sweep; returns the sweep summary (also in ``sweep.json``).

    ``progress(stage, done, total)`` reports points; ``log(message)`` receives one line per skipped or failed
    point."""

    report = progress or (lambda *_: None)
    say = log or (lambda _msg: None)
    base = sc.base
    spec = get_spec(base.model)
    if sc.max_point_seconds is not None and not sc.max_point_seconds > 0:
        raise DiffprobeError(f"--max-point-seconds must be positive, got {sc.max_point_seconds:g}")
    if sc.accel is not None:  # presets and density checked before any point
        check_accel(sc.accel, sc.accel_density)
    elif sc.accel_density is not None:
        raise DiffprobeError("--accel-density needs --accel PRESET")
    for h, w in sc.resolutions:  # validate every point before any work
        check_resolution(spec, h, w)
    for f in sc.frames or []:
        check_frames(spec, f)
    sc.executor.check()
    base = replace(base, height=sc.resolutions[0][0], width=sc.resolutions[0][1]).resolved()
    sc = sc.with_out()
    folder = SweepFolder(sc.out, sc.identity())
    state = folder.open()
    state.update({"config": sc.identity(),
                  "model": base.model, "mode": base.mode, "hardware": base.hardware,
                  "random_weights": base.random_weights})
    state.setdefault("points", {})
    folder.save(state)
    todo = sc.points()
    t_start = time.perf_counter()
    state["status"], state["error"] = "running", None
    try:
        _run_points(sc, base, spec, folder, state, todo, report, say)
        state["status"] = "ok"
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM
        state["status"], state["error"] = "interrupted", f"interrupted ({interruption(exc)})"
        raise
    except BaseException as exc:
        state["status"], state["error"] = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:  # also after Ctrl-C or a failure: findings from the points present, nothing finished is lost
        folder.store.clear_partial()
        names = [point_name(*p) for p in todo]
        state["findings"] = points_findings(folder.store, names)
        state["complete"] = all(folder.finished(n) or state["points"].get(n, {}).get("status") in (
            "failed", "skipped") for n in names)
        state["wall_s"] = time.perf_counter() - t_start
        folder.save(state)
        folder.close()
    return state


def sweep_point(args: tuple, staging: Path, cache: dict) -> None:
    """One sweep point (a :class:`~diffprobe.run.points.PointJob`'s work): the profile of ``cfg`` written into
    ``staging``, and its accelerator evaluation beside it (``accel.json``)."""
    cfg, accel, density = args
    run_profile(replace(cfg, out=str(staging)), pipe=cached_pipeline(cache, cfg))
    if accel is not None:
        accel_run(staging, accel, density)


def _run_points(sc: SweepConfig, base: ProfileConfig, spec, folder: SweepFolder, state: dict, todo: list,
                report, say) -> None:
    points = state["points"]
    sizes = {point_name(*p): p for p in todo}
    resources = sc.executor.resources(base.device, base.mode == "analytic")

    def config(name: str) -> ProfileConfig:
        h, w, b, f = sizes[name]
        return replace(base, height=h, width=w, batch=b, frames=f or base.frames)

    def record(name: str, status: str, **extra) -> None:
        h, w, b, f = sizes[name]
        points[name] = {"height": h, "width": w, "batch": b, **({"frames": f} if f else {}), "status": status,
                        **extra}
        if status != "ok":
            say(extra["message"])
        folder.save(state)

    def skip(name: str) -> bool:
        cfg = config(name)
        if cfg.mode != "measured" or sc.max_point_seconds is None:
            return False
        preset = cfg.hardware or ("this-cpu" if cfg.device == "cpu" else None)
        if preset is None:
            return False
        predicted = _predicted_seconds(cfg, preset)
        if predicted <= sc.max_point_seconds:
            return False
        record(name, "skipped", message=f"point {name} skipped: its roofline time on {preset} is at least "
               f"{predicted:.0f} s, over --max-point-seconds {sc.max_point_seconds:g}")
        return True

    jobs = [PointJob(name, sweep_point, (config(name), sc.accel, sc.accel_density), **resources) for name in sizes]
    run_jobs(folder, jobs, sc.executor, report, "points", skip=skip, log=say,
             on_done=lambda name, info: record(name, "ok", dir=f"points/{name}", **_attempts(info)),
             on_error=lambda name, exc, info: record(name, "failed", message=f"point {name} failed: {exc}",
                                                     **_attempts(info)))


def _attempts(info: dict) -> dict:
    """What a point's entry keeps of how it ran: its attempts and retries, where it was retried."""
    return {k: info[k] for k in ("attempts", "retries") if k in info and (k != "attempts" or info[k] > 1)}


def finished_points(folder: str | Path) -> list[str]:
    """Names of the point folders of a sweep whose ``run.json`` says ok, in name order."""
    names = []
    for run in sorted(Path(folder).glob("points/*/run.json")):
        try:
            if json.loads(run.read_text(encoding="utf-8")).get("status") == "ok":
                names.append(run.parent.name)
        except (OSError, ValueError):
            continue
    return names


def load_point(folder: str | Path | Store, name: str) -> tuple[dict, object]:
    """A point's ``run.json`` and records."""
    store = folder if isinstance(folder, Store) else Store(folder)
    rel = f"points/{name}"
    return store.read_json(f"{rel}/run.json"), ops_frame(store.read_table(f"{rel}/ops.parquet"),
                                                          store.url(f"{rel}/ops.parquet"))


def points_findings(folder: str | Path | Store, names: list[str]) -> dict:
    """The sweep's findings (:func:`diffprobe.analyses.sweep.findings`) from those of ``names`` that finished, with
    their sentences (``sentences``)."""
    store = folder if isinstance(folder, Store) else Store(folder)
    rows = []
    for name in names:
        if not store.exists(f"points/{name}/run.json"):
            continue
        run, ops = load_point(store, name)
        if run.get("status") != "ok":
            continue
        accel_file = f"points/{name}/accel.json"
        accel = store.read_json(accel_file) if store.exists(accel_file) else None
        rows.append(point_summary(name, run, ops, accel))
    out = findings(rows)
    out["sentences"] = sweep_findings({"findings": out})
    return out


def current_findings(folder: str | Path, state: dict) -> dict:
    """``state["findings"]``, recomputed from the points on disk when they hold more than it covers (a sweep
    killed before it could write its findings)."""
    f = state.get("findings") or {}
    names = finished_points(folder)
    if len(f.get("points", [])) >= len(names) and "sentences" in f:
        return f
    return points_findings(folder, names)
