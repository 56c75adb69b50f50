"""``diffprobe hardware calibrate``, whole: the operator curves (:mod:`diffprobe.hardware.calibrate`), then the cost
that is not an operator's, fitted on the ``tiny`` model.

A pipeline spends time between its operators too: Python in the modules, hooks, the pipeline's own code. The curves
price operators measured alone; the rest is fitted per stage as seconds per record: the ``tiny`` model (the same
diffusers classes as the UNet models, at sizes where that cost dominates) is traced analytically for its records and
run untraced for its stage times (the median of ``repeat``), and each stage's time not explained by its records'
predicted work, divided by its records, is that stage's ``overhead_s``. A transformer denoiser spends other Python
per record than a UNet (here 10-14 us against the tiny UNet's 18.5, at 64 px under one calibration): its own is
fitted on two tiny DiTs pooled (``denoiser_overhead_s``). None of the fit's models is one of the runs
``benchmarks/predict.py`` predicts.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from diffprobe.analyses.predict import predict_seconds
from diffprobe.attention.bench import INDEX_GRIDS, KERNEL_GRIDS, index_curve, kernel_curve
from diffprobe.errors import DiffprobeError, interruption
from diffprobe.hardware.calibrate import GRIDS, calibrate, highest_rates, reference_rate
from diffprobe.hardware.passes import Interrupted, median_of_passes, scale_flop_curves, scale_memory_curves
from diffprobe.hardware.preset import from_dict, to_toml
from diffprobe.hardware.probes import light_speeds
from diffprobe.hardware.steadiness import MEMORY_SPEED, SPEED_FROM_BYTES, Speedometer, speed_normalized, steadiness
from diffprobe.records.runfolder import atomic_write, write_json
from diffprobe.run.profile import ProfileConfig, run_profile

FIT = {"model": "tiny", "height": 128, "width": 128, "steps": 4}
TRANSFORMER_FITS = ("tiny-sd3", "tiny-sana")  # DiTs at their tiny size; neither is predicted by benchmarks/predict.py


def residuals(table: dict, base: dict, fit: dict, repeat: int = 5) -> dict[str, tuple[float, int]]:
    """Per stage of the ``fit`` run: (its untraced measured seconds, the median of ``repeat`` after a warm-up, less
    its records' predicted work; its record count)."""
    preset = from_dict({**base, "calibration": {**table, "overhead_s": {}, "denoiser_overhead_s": {}}},
                       "calibration being fitted")
    with tempfile.TemporaryDirectory(prefix="diffprobe-calibrate-") as tmp:
        analytic = run_profile(ProfileConfig(**fit, mode="analytic", out=f"{tmp}/a"))
        measured = run_profile(ProfileConfig(**fit, sample_steps=0, trace_ops=False, repeat=repeat, warmup=1,
                                             out=f"{tmp}/m"))
    pred = predict_seconds(analytic.ops, preset)
    work = pred.groupby("stage")["predicted_s"].sum()
    count = pred.groupby("stage").size()
    stages = {("pipeline" if k == "other" else k): v for k, v in measured.stages.items()
              if k not in ("total", "tokenize")}
    return {s: (stages[s] - float(work.get(s, 0.0)), int(count[s])) for s in stages if count.get(s)}


def fit_overhead(table: dict, base: dict, repeat: int = 5, on: dict | None = None) -> dict:
    """Seconds per record of each stage of ``tiny`` that its operators' predicted work leaves unexplained (0 at
    least); ``on``: the runs' ``device`` and ``dtype`` (those of the curves; default the CPU in float32)."""
    return {s: max(0.0, r / n) for s, (r, n) in residuals(table, base, {**FIT, **(on or {})}, repeat).items()}


def fit_transformer_overhead(table: dict, base: dict, repeat: int = 5, on: dict | None = None) -> float:
    """A transformer denoiser's seconds per record between operators, pooled over :data:`TRANSFORMER_FITS` (a DiT
    spends other Python per record than a UNet); ``on`` as for :func:`fit_overhead`."""
    parts = [residuals(table, base, {"model": m, "steps": 4, **(on or {})}, repeat)["denoiser"]
             for m in TRANSFORMER_FITS]
    return max(0.0, sum(r for r, _ in parts) / sum(n for _, n in parts))


def calibrate_machine(level: str, dtype: str, device: str, base: dict, progress=None, passes: int = 1) -> dict:
    """The calibration table with the block-sparse kernel's curve (``block_sparse``, where the kernel runs here), its
    fitted ``overhead_s`` (per stage, on ``tiny``) and ``denoiser_overhead_s`` (per denoiser component: ``unet`` from
    ``tiny``, ``transformer`` from :data:`TRANSFORMER_FITS`); its reference probes end after the fits. ``passes``:
    the operator curves' (:func:`~diffprobe.hardware.calibrate.calibrate`). Interrupted (Ctrl-C, SIGTERM), it raises
    :class:`~diffprobe.hardware.passes.Interrupted` with what was measured, ``meta.interrupted`` saying what not."""
    table: dict = {}
    meter = Speedometer(lambda: light_speeds(dtype, device))
    try:
        with speed_normalized(meter):
            table = calibrate(level, dtype, device, progress, passes=passes)
            _after_the_curves(table, level, dtype, device, base, progress, passes)
    except Interrupted as exc:  # in the curves: those of the passes that finished, and nothing after them
        if exc.table is not None:
            exc.table["meta"]["interrupted"] += unfinished(exc.table)
        at_median_speed(exc.table, meter, exc.curves)
        raise
    except KeyboardInterrupt as exc:  # after the curves: they are a calibration, with what finished after them
        if not table:  # in the first reference probe, before any curve: nothing measured to keep
            raise
        table["meta"]["interrupted"] = f"interrupted ({interruption(exc)}) after the curves{unfinished(table)}"
        at_median_speed(table, meter)
        raise Interrupted(exc, table, {}) from exc
    return at_median_speed(table, meter)


def at_median_speed(table: dict | None, meter: Speedometer, curves: dict | None = None) -> dict | None:
    """``table``'s curves (and an interrupted pass's ``curves``; either may be None), each point measured at the
    first probe's speed, moved to the median probe's; ``meta`` says how (``speed_normalized``)."""
    for t in (table, curves):
        if t:
            scale_flop_curves(t, meter.to_median())
            scale_memory_curves(t, lambda cls: meter.to_median(MEMORY_SPEED[cls]), SPEED_FROM_BYTES)
    if table is None or not meter.samples:  # no curve timed under it (nothing scaled)
        return table
    table["meta"].update(meter.meta(), speed_normalized=(
        "each point of the FLOP curves (gemm, conv, sdpa, block_sparse, block_index) scaled to the calibration's "
        f"median speed by a light GEMM probe timed after it ({meter.meta()['speed_probes']} probes, at most "
        f"{meter.every:g} s apart), each memory point of {SPEED_FROM_BYTES >> 20} MiB or more likewise (elementwise, "
        "copy and norm by a light copy timed with the GEMM, activation and softmax by the GEMM); the smaller memory "
        "points, view_s and the overhead fits as timed"))
    return table


def unfinished(table: dict) -> str:
    """What an interrupted calibration lacks of the parts after its curves, as the end of its ``interrupted`` line."""
    missing = [what for what, done in (
        ("the block-sparse kernel's curve", "block_sparse" in table or "block_sparse_note" in table["meta"]),
        ("a block call's index curve", "block_index" in table or "block_sparse_note" in table["meta"]),
        ("the overhead between operators (its predictions leave it out)", "overhead_s" in table),
        ("a transformer denoiser's own overhead", "denoiser_overhead_s" in table)) if not done]
    return f"; not measured: {', '.join(missing)}" if missing else ""


def _after_the_curves(table: dict, level: str, dtype: str, device: str, base: dict, progress, passes: int) -> None:
    started, curves = time.perf_counter(), []
    repeats = max(3, GRIDS[level]["repeats"])
    try:  # the block-sparse kernel by density and a block call's index (attention/bench.py), where the kernel runs
        for i in range(passes):  # here, in as many passes as the grids; one progress count over the passes
            tick = (lambda s, d, t, i=i: progress(s, i * t + d, passes * t)) if progress else None
            curves.append({"block_sparse": kernel_curve(KERNEL_GRIDS[level], dtype, device, repeats, progress=tick)})
            curves[-1]["block_index"] = index_curve(INDEX_GRIDS[level], dtype, device, repeats, progress=tick)
    except Exception as exc:  # noqa: BLE001 — no kernel here (no compiler, no Triton): the rest still calibrates
        what = f"failed after {len(curves)} of {passes} passes" if curves else "not calibrated"
        table["meta"]["block_sparse_note"] = f"block-sparse kernel {what}: {type(exc).__name__}: {exc}"[:300]
    finally:  # each rate the median of the passes that finished (an interruption keeps those)
        finished = [c for c in curves if "block_index" in c]  # a pass interrupted in its index curve: its kernel's
        kernel = [{"block_sparse": c["block_sparse"]} for c in curves]  # curve still counts
        if kernel:
            table["block_sparse"] = median_of_passes(kernel)["block_sparse"]
            table["meta"]["block_sparse_passes"] = len(kernel)
        if finished:
            table["block_index"] = median_of_passes([{"block_index": c["block_index"]} for c in finished])[
                "block_index"]
        table["meta"]["block_sparse_s"] = time.perf_counter() - started
    on = {"device": device, "dtype": dtype}  # the fits run where the curves were measured, in their dtype
    table["overhead_s"] = fit_overhead(table, base, on=on)
    table["denoiser_overhead_s"] = {"unet": table["overhead_s"].get("denoiser", 0.0),
                                    "transformer": fit_transformer_overhead(table, base, on=on)}
    table["meta"]["overhead_fit"] = (f"{FIT['model']} at {FIT['height']} px, {FIT['steps']} steps (transformer "
                                     f"denoisers: {' and '.join(TRANSFORMER_FITS)}), untraced, median of 5 runs "
                                     f"after a warm-up, on {device} in {dtype}")
    # the machine's speed after the kernel curve and the fits too: the steadiness covers the whole calibration
    table["meta"].update(steadiness([*table["meta"].get("reference_probes", []), reference_rate(dtype, device)]))


def calibration_preset(base: dict, table: dict, dtype: str, quick: bool, passes: int) -> dict:
    """The preset file's table of a calibration: this machine's preset (``base``, its ceilings raised to the rates the
    curves measured under them) named and sourced by the date and command, with the ``calibration`` table."""
    meta = table["meta"]
    flops, moved = highest_rates(table)  # the ceilings hold the rates measured under them
    base = {**base, "peak_flops": {**base["peak_flops"], dtype: max(base["peak_flops"][dtype], flops)},
            "memory_bandwidth": max(base["memory_bandwidth"], moved)}
    stopped = " (interrupted: see calibration.meta.interrupted)" if meta.get("interrupted") else ""
    return {**base, "name": f"calibrated-{meta['date'][:10]}", "title": f"{meta['cpu']} ({meta['threads']} "
            f"threads, {meta['cpu_capability']}), calibrated {meta['date'][:10]}",
            "source": f"{base['source']}; calibrated by `diffprobe hardware calibrate"
            f"{' --quick' if quick else ''}{f' --passes {passes}' if passes > 1 else ''}` in "
            f"{meta['command_s']:.0f} s{stopped}", "calibration": table}


def write_calibration(path: Path, preset: dict) -> None:
    """Write ``preset`` to ``path`` (atomically), having read it back as a preset; one line where it cannot be."""
    from_dict(preset, str(path))  # what is written reads back
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(to_toml(preset), encoding="utf-8"))
    except OSError as exc:
        raise DiffprobeError(f"cannot write --out {path}: {exc.strerror or exc}") from None


def write_unfinished_pass(path: Path, exc: Interrupted, base: dict) -> Path | None:
    """Where an interruption came before any pass through the grids finished: the curves that pass had finished,
    as JSON beside ``path`` (``<name>.partial.json``; not a preset); None where it had finished none."""
    if not exc.curves:
        return None
    partial = path.with_name(f"{path.stem}.partial.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(partial, {"interrupted": f"interrupted ({interruption(exc.cause)}) in the first pass through the "
                             f"grids, after the curves {', '.join(exc.curves)}: not a calibration (a preset needs "
                             "every curve)", "machine": base, "curves": exc.curves})
    except OSError as exc2:
        raise DiffprobeError(f"cannot write {partial}: {exc2.strerror or exc2}") from None
    return partial
