"""The calibrated model against measurements it was not fitted on (issue 30's targets), in one run.

1. ``diffprobe hardware calibrate`` (``--quick`` or full) writes a preset with this machine's curves (its overhead
   fitted on ``tiny``, which is not predicted here).
2. For each run below: the analytic records priced by the calibrated model and by the roofline (``profile --mode
   analytic --hardware PRESET``), against the stage times of an untraced measured run of the same configuration
   (``--no-trace --sample-steps 0 --warmup 1``: every step executed, the tracer's own cost left out, after one
   run of the pipeline: the steady state the model predicts, not the first call's one-time costs; the tiny models'
   milliseconds the median of five runs). Per stage (denoiser, VAE decoder, text encoders) and the run total (the
   stages' sum): predicted / measured - 1.
3. Per layer type with at least 5% of the denoiser's time: SD 1.5 at 512 px traced for one step (after a warm-up
   run); each record's operator time (the clock marks around it) against the model's price of the same record, its
   overhead between operators left out (the marks do not see it either); likewise per operator class of each stage
   (``classes_sd15_512``: where the model misses).
4. The block-sparse kernel by density: ``kernels bench --hardware PRESET`` at points off the calibration's grid,
   the kernel's and dense SDPA's measured seconds against the curves' (no target: reported).
5. Settings end to end (:data:`SETTING_RUNS`): ``profile --approx SETTING --hardware PRESET``, the setting's
   denoiser and dense's, both untraced, against their predictions (the block method's calls on the kernel and index
   curves; no target: reported).

    python benchmarks/predict.py [--quick] [--preset FILE (skip calibrating)] [--runs sd15-256,...] [--repeat N]
        [--passes N] [--rounds N]

``--rounds N`` measures every run (and the traced step) N times, round-robin after the calibration, each stage's
seconds the median over the rounds: a shared machine's slow minute lands in one round, where the repeats of one
run, back to back, all meet it (the measured side's ``--passes``).

Prints one JSON object with the machine, the calibration's time and every error; targets: denoiser <= 10%,
other stages <= 15%, run total <= 10%, layer types <= 20%, on every run but the tiny DiTs (:data:`PYTHON_BOUND`:
reported, their milliseconds Python between operators). Beside each error, ``error_at_speed``: the same at the
machine's speed around the run (``speed_ratio``: the probe the calibration's level was measured with, timed before
and after the run, against that level; not a target). With ``--rounds`` 2 or more, each run's ``round_spread`` and
``measured_self_agreement`` (:func:`self_agreement`): how far the same run measured twice disagrees with itself, and
whether the probe around a round tracked its speed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # name: (model, side, steps)
    "sd15-256": ("sd15", 256, 4), "sd15-512": ("sd15", 512, 3), "sd21-base-512": ("sd21-base", 512, 3),
    "sdxl-512": ("sdxl", 512, 2), "small-pixart": ("small-pixart", 256, 2), "small-flux": ("small-flux", 256, 2),
    "tiny-pixart": ("tiny-pixart", None, 4), "tiny-flux": ("tiny-flux", None, 4),
}
TARGET = {"denoiser": 0.10, "total": 0.10, "other": 0.15, "layer_type": 0.20}
# reported beside the targets, not held to them: milliseconds of Python between operators, which no feature of the
# records predicts across models (docs/prediction.md); the issue asks for "tiny-or-small variants" of PixArt-α and
# FLUX, and the small ones (the published widths, fewer layers) are the targets' DiTs
PYTHON_BOUND = ("tiny-pixart", "tiny-flux")


def cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "diffprobe", *args, "-q", "--format", "json"], check=True, cwd=ROOT,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def size(side) -> list[str]:
    return [] if side is None else ["--height", str(side), "--width", str(side)]


DEVICE: list[str] = []  # --device/--dtype of every run (empty: the CPU in fp32)


def measure(name: str, preset: str, tmp: Path, repeat: int, round_: int) -> tuple[dict, float | None]:
    """One round's stage seconds of a run (untraced, after a warm-up run; the median of ``repeat``, the tiny ones'
    of five) and the machine's speed around it (``--hardware``: the probe the calibration's level was measured with,
    timed before and after the run, against that level)."""
    model, side, steps = RUNS[name]
    times = 5 if model.startswith("tiny") else repeat  # milliseconds: the median of five
    doc = cli("profile", "--model", model, *size(side), "--steps", str(steps), *DEVICE, "--sample-steps", "0",
              "--no-trace", "--warmup", "1", "--repeat", str(times), "--hardware", preset,
              "--out", str(tmp / f"{name}-m{round_}"))
    stages = {("pipeline" if k == "other" else k): v for k, v in doc["stages"].items()
              if k not in ("total", "tokenize")}
    return stages, (doc.get("machine_speed") or {}).get("ratio")


def one_run(name: str, preset: str, tmp: Path, rounds: list[tuple[dict, float | None]] | None,
            earlier: dict | None = None) -> dict:
    """A run's analytic records priced by the calibrated model and the roofline, against its measured stages: each
    stage the median over the ``rounds`` (:func:`measure`, each a pass through every run), the speed ratio likewise;
    or an ``earlier`` result's measured seconds (iterating on the model, not for the record)."""
    model, side, steps = RUNS[name]
    roof = cli("profile", "--model", model, *size(side), "--steps", str(steps), *DEVICE, "--mode", "analytic",
               "--hardware", preset, "--out", str(tmp / f"{name}-a"))["roofline"]
    if earlier is not None:
        stages, speed = {s: v["measured_s"] for s, v in earlier["runs"][name]["stages"].items()}, None
    else:
        stages = {s: statistics.median(r[0][s] for r in rounds) for s in rounds[0][0]}
        ratios = [r[1] for r in rounds if r[1] is not None]
        speed = statistics.median(ratios) if ratios else None
    cal, bound = roof["calibrated"]["by_stage"], roof["prediction"]["by_stage"]
    rows = {s: {"measured_s": m, "calibrated_s": cal.get(s, 0.0), "roofline_s": bound.get(s, 0.0),
                "error": cal.get(s, 0.0) / m - 1, "roofline_error": bound.get(s, 0.0) / m - 1}
            for s, m in stages.items() if m > 0}
    total_m = sum(stages.values())
    total_c = sum(cal.get(s, 0.0) for s in stages)
    total_r = sum(bound.get(s, 0.0) for s in stages)
    out = {"model": model, "side": side, "steps": steps, "stages": rows,
           "total": {"measured_s": total_m, "calibrated_s": total_c, "roofline_s": total_r,
                     "error": total_c / total_m - 1, "roofline_error": total_r / total_m - 1}}
    if rounds and len(rounds) > 1:  # each round's measured seconds, for the spread the medians hide
        out["rounds"] = [{**r[0], "speed_ratio": r[1]} for r in rounds]
        den, tot = [r[0].get("denoiser", 0.0) for r in rounds], [sum(r[0].values()) for r in rounds]
        out["round_spread"] = {k: max(v) / min(v) - 1 for k, v in (("denoiser", den), ("total", tot)) if min(v) > 0}
    if speed is not None:  # the machine's speed around the run against the calibration's; the error at that speed
        out["speed_ratio"] = speed  # (not a target: the error had the run met the probes' speed; whether the probes
        # tracked a run's speed at all, measured_self_agreement says)
        for row in (*rows.values(), out["total"]):
            row["error_at_speed"] = row["calibrated_s"] / speed / row["measured_s"] - 1
    return out


def self_agreement(runs: dict) -> dict | None:
    """How far the measured side agrees with itself, over the runs held to the targets with two rounds or more: the
    median of their ``round_spread`` (the slowest round over the fastest, - 1: a prediction is not judged closer than
    that), and how the speed probe around a round tracked its denoiser (over every pair of one run's rounds,
    log(speed ratio) against log(1 / seconds): ``correlation`` 1 and ``slope`` 1 where the probe says the round's
    speed, 0 where it says nothing). None with one round."""
    held = [r for name, r in runs.items() if name not in PYTHON_BOUND and "round_spread" in r]
    if not held:
        return None
    out = {k: statistics.median(r["round_spread"][k] for r in held) for k in ("denoiser", "total")}
    x, y = [], []
    for r in held:
        rs = [q for q in r["rounds"] if q.get("speed_ratio") and q.get("denoiser")]
        for i, a in enumerate(rs):
            for b in rs[i + 1:]:
                x.append(math.log(a["speed_ratio"] / b["speed_ratio"]))
                y.append(math.log(b["denoiser"] / a["denoiser"]))
    out["speed_tracking"] = {"pairs": len(x)}
    if len(x) > 2 and len(set(x)) > 1 and len(set(y)) > 1:
        out["speed_tracking"].update(correlation=statistics.correlation(x, y),
                                     slope=statistics.linear_regression(x, y).slope)
    return out


def traced(preset: str, tmp: Path, rounds: int = 1) -> tuple[dict, dict, float | None]:
    """SD 1.5 at 512 px, one step traced (once per round): each denoiser layer type's operator time against the
    model's price, and each stage's operator classes likewise (where the model misses, by class), each measured time
    the median over the rounds; with the machine's speed around the step against the calibration's (its median;
    ``error_at_speed`` beside each error)."""
    import pandas as pd

    from diffprobe.analyses.predict import overhead_per_record, predict_seconds
    from diffprobe.hardware.presets import get_preset
    from diffprobe.records.runfolder import read_ops

    p, frames, ratios = get_preset(preset), [], []
    for r in range(rounds):
        doc = cli("profile", "--model", "sd15", "--height", "512", "--width", "512", "--steps", "2", "--sample-steps",
                  "1", "--warmup", "1", *DEVICE, *(["--op-timer", "profiler"] if DEVICE else []), "--hardware",
                  preset, "--out", str(tmp / f"lt{r}"))
        if doc.get("machine_speed"):
            ratios.append(doc["machine_speed"]["ratio"])
        ops = read_ops(tmp / f"lt{r}")
        pred = predict_seconds(ops[~ops["replayed"]], p)
        pred["work_s"] = pred["predicted_s"] - overhead_per_record(pred, p.calibration)
        frames.append(pred)
    ratio = statistics.median(ratios) if ratios else None  # the machine's speed around the traced steps

    def compare(key: str, least: float, stage: str) -> dict:
        sums = [f[f["stage"] == stage].groupby(key)[["time_s", "work_s"]].sum() for f in frames]
        by = pd.DataFrame({"measured_s": pd.concat([s["time_s"] for s in sums], axis=1).median(axis=1),
                           "calibrated_s": sums[0]["work_s"]})  # the same records each round: the same price
        by["share"] = by["measured_s"] / by["measured_s"].sum()
        by["error"] = by["calibrated_s"] / by["measured_s"] - 1
        if ratio:  # as each run's error_at_speed: not a target, how much of a miss the machine's drift explains
            by["error_at_speed"] = by["calibrated_s"] / ratio / by["measured_s"] - 1
        big = by[by["share"] >= least].sort_values("share", ascending=False)
        return {t: {k: float(v) for k, v in r.items()} for t, r in big.iterrows()}

    layer = compare("layer_type", 0.05, "denoiser")
    classes = {s: compare("op_class", 0.01, s) for s in ("denoiser", "vae_decoder", "text_encoder")
               if (frames[0]["stage"] == s).any()}
    return layer, classes, ratio


# block-sparse kernel points off the calibration's grid (tokens, head dim, kept density): SD 1.5's first level at
# 256 and 512 px, SD 2.1's at 512 px
KERNEL_POINTS = ((1024, 40, 0.3), (2048, 40, 0.25), (4096, 40, 0.5), (4096, 64, 0.3))


def kernels(preset: str) -> list[dict]:
    """The block-sparse kernel (on a prepared layout) and dense SDPA at :data:`KERNEL_POINTS`, 8 heads: measured by
    ``kernels bench`` against the calibration's ``block_sparse`` and ``sdpa`` curves. Dense SDPA's error beside the
    kernel's shows the machine's drift since the calibration (both move together when the machine does)."""
    rows = []
    for tokens, d, density in KERNEL_POINTS:
        r = cli("kernels", "bench", "--tokens", str(tokens), "--head-dim", str(d), "--density", str(density),
                "--heads", "8", "--check-heads", "0", "--repeats", "5", "--hardware", preset, *DEVICE)
        p = r["predicted"]
        rows.append({"tokens": tokens, "head_dim": d, "density": r["kept_density"], "backend": r["backend"],
                     "kernel_s": r["kernel_s"], "predicted_kernel_s": p["kernel_s"], "error": p["kernel_error"],
                     "dense_s": r["dense_s"], "predicted_dense_s": p["dense_s"], "dense_error": p["dense_error"]})
    return rows


# settings priced end to end (step 5): the block method on the block-sparse kernel, and step-level reuse
SETTING_RUNS = (("sd15", 512, 2, "block=0.5"), ("sd15", 256, 4, "deepcache=2"))


def settings(preset: str, tmp: Path) -> list[dict]:
    """``profile --approx SETTING --hardware PRESET`` at :data:`SETTING_RUNS`: the setting's denoiser and dense's,
    both untraced on the same noise, against the calibrated model's predictions of each (``approx.predicted``: the
    block method's calls re-priced on the kernel and index curves; reuse's records priced as they ran)."""
    rows = []
    for model, side, steps, setting in SETTING_RUNS:
        doc = cli("profile", "--model", model, *size(side), "--steps", str(steps), *DEVICE, "--sample-steps", "0",
                  "--approx", setting, "--hardware", preset, "--out", str(tmp / f"{model}-{side}-{setting}"))
        p = doc["approx"]["predicted"]
        ap = doc["approx"]
        rows.append({"model": model, "side": side, "steps": steps, "setting": setting, "kernel": ap["kernel"],
                     "kept_fraction": ap["kept_fraction"], **p["versus_measured"],
                     "attention": p.get("attention"), "notes": p["notes"],
                     "speed_ratio": (doc.get("machine_speed") or {}).get("ratio")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset")
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--measured", help="reuse the measured seconds of an earlier result JSON (iterating only)")
    ap.add_argument("--keep-preset", help="copy the calibrated preset here (to share or reuse with --preset)")
    ap.add_argument("--device", default="cpu", help="cuda: calibrate and measure on the GPU (gpu_check.sh predict)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-kernels", action="store_true", help="skip step 4 (on a GPU each point compiles a kernel)")
    ap.add_argument("--no-settings", action="store_true", help="skip step 5")
    ap.add_argument("--passes", type=int, default=1, help="calibrate --passes: the operator grids timed this many "
                    "times over, each rate the median")
    ap.add_argument("--rounds", type=int, default=1, help="measure every run (and the traced step) this many times, "
                    "round-robin, each stage the median over the rounds (a shared machine's slow minute in one round)")
    ap.add_argument("--repeat", type=int, default=1, help="each full-size run's stages: the median of this many "
                    "runs (a shared machine's run-to-run spread; the tiny ones always five)")
    args = ap.parse_args()
    bounds = (("--passes", args.passes, 9), ("--rounds", args.rounds, None), ("--repeat", args.repeat, None))
    for flag, value, most in bounds:
        if value < 1 or (most and value > most):  # one line, exit 2, before anything is timed
            sys.stderr.write(f"predict.py: error: {flag} {value}: 1{f' to {most}' if most else ' or more'}\n")
            sys.exit(2)
    if args.device != "cpu" or args.dtype != "float32":
        DEVICE.extend(["--device", args.device, "--dtype", args.dtype])
    import torch

    sys.path.insert(0, str(ROOT))
    from diffprobe.hardware.presets import get_preset

    result = {"device": args.device, "dtype": args.dtype,
              "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
              "machine": platform.node(), "cpu": Path("/proc/cpuinfo").read_text().split("model name")[1]
              .split(":", 1)[1].splitlines()[0].strip(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="diffprobe-predict-") as tmp:
        tmp = Path(tmp)
        preset = args.preset
        if preset is None:
            preset = str(tmp / "calibration.toml")
            t0 = time.perf_counter()
            cli("hardware", "calibrate", *(["--quick"] if args.quick else []), "--out", preset, "--device", args.device,
                "--dtype", args.dtype, "--passes", str(args.passes))
            result["calibration_s"] = time.perf_counter() - t0
            if args.keep_preset:
                Path(args.keep_preset).write_text(Path(preset).read_text())
        result["level"] = "quick" if args.quick else "full"
        earlier = json.loads(Path(args.measured).read_text()) if args.measured else None
        result["measured_from"] = args.measured
        result["repeat"], result["passes"], result["rounds"] = args.repeat, args.passes, args.rounds
        names = args.runs.split(",")
        measured: dict = {name: [] for name in names}
        for r in range(args.rounds if earlier is None else 0):  # round-robin: a slow minute lands in one round
            for name in names:
                measured[name].append(measure(name, preset, tmp, args.repeat, r))
        result["runs"] = {name: one_run(name, preset, tmp, measured[name], earlier) for name in names}
        result["layer_types_sd15_512"], result["classes_sd15_512"], result["traced_speed_ratio"] = traced(
            preset, tmp, args.rounds)
        result["block_sparse_kernel"] = [] if args.no_kernels else kernels(preset)
        result["settings"] = [] if args.no_settings else settings(preset, tmp)
        meta = get_preset(preset).calibration["meta"]  # how steady the machine was while calibrated
        result["calibration_steadiness"] = {k: meta.get(k) for k in ("reference_flops_per_s", "reference_spread",
                                                                     "steadiness_note")}
    held = [r for name, r in result["runs"].items() if name not in PYTHON_BOUND]
    result["not_held_to_targets"] = [name for name in result["runs"] if name in PYTHON_BOUND]
    worst = {"denoiser": max((abs(r["stages"]["denoiser"]["error"]) for r in held), default=None),
             "total": max((abs(r["total"]["error"]) for r in held), default=None),
             "other": max((abs(s["error"]) for r in held for n, s in r["stages"].items()
                           if n.startswith(("text_encoder", "vae_decoder"))), default=None),
             "layer_type": max(abs(r["error"]) for r in result["layer_types_sd15_512"].values())}
    result["worst"] = worst  # None: no run held to that target among --runs
    result["measured_self_agreement"] = self_agreement(result["runs"])  # the noise floor beside the errors
    result["targets_met"] = {k: None if worst[k] is None else worst[k] <= TARGET[k] for k in TARGET}
    # the issue sets no target for the kernel alone: reported beside the others
    result["worst"]["block_sparse_kernel"] = max((abs(r["error"]) for r in result["block_sparse_kernel"]),
                                                 default=None)
    # nor for a setting's denoiser: reported (the setting's and dense's errors side by side)
    result["worst"]["settings"] = max((abs(r["denoiser"]["error"]) for r in result["settings"]), default=None)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
