"""The GPU-timing check for one model and size (runs on the CPU too, where "kernel" time is CPU op time).

Three runs of the same configuration, each from a fresh pipeline:
  1. traced, ``--op-timer profiler``: markers seen vs calls handled; kernel time outside every marker and on view
     rows; kernel time, busy and idle per stage;
  2. untraced, under the profiler with a marker around each stage only: kernel time per stage, so the tracer's
     effect on the kernels themselves shows as the traced / untraced ratio (goal 0.95-1.05);
  3. ``--compile``: compiled vs eager per layer type, compile time, kernels matched to Inductor's provenance, and
     the roofline (``--hardware``) predicted vs measured per stage and layer type.
Prints one block of lines and writes everything to ``--json``.

    python benchmarks/gpu_timing.py --model sd21-base --px 512 --device cuda --dtype float16 --hardware H100-SXM \
        --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffprobe  # noqa: E402
from diffprobe.hardware.environment import environment  # noqa: E402
from diffprobe.models.registry import get_spec  # noqa: E402
from diffprobe.records.runfolder import standard  # noqa: E402
from diffprobe.run.profile import ProfileConfig, build_pipeline, pipeline_kwargs  # noqa: E402
from diffprobe.timing.kernels import MARKER, classify, join  # noqa: E402
from diffprobe.timing.stages import StageTimer  # noqa: E402


class MarkedStages(StageTimer):
    """The stage timer's hooks, each stage wrapped in a profiler marker (``MARKER`` + stage number)."""

    names: list[str] = []

    def _begin(self, stage: str) -> None:
        import torch

        super()._begin(stage)
        self.names.append(stage)
        self._marker = torch._C._profiler._RecordFunctionFast(f"{MARKER}{len(self.names) - 1}")
        self._marker.__enter__()

    def _end(self, stage: str) -> None:
        self._marker.__exit__(None, None, None)
        super()._end(stage)


def untraced_kernel_seconds(cfg: ProfileConfig) -> dict[str, float]:
    """Kernel (device) seconds per stage of one untraced run (after one warm-up run), joined to stage markers."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cfg = cfg.resolved()
    pipe = build_pipeline(cfg, get_spec(cfg.model))
    steps = cfg.sample_steps or None

    def stop(p, i, t, kw):
        if steps and i + 1 >= steps:
            p._interrupt = True
        return kw

    with torch.inference_mode():
        pipe(**pipeline_kwargs(cfg, pipe), callback_on_step_end=stop)  # warm-up
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cfg.device.startswith("cuda") else [])
        timer = MarkedStages(pipe, cfg.device)
        timer.names = []
        with timer, profile(activities=acts, record_shapes=False) as prof:
            pipe(**pipeline_kwargs(cfg, pipe), callback_on_step_end=stop)
    joined = join(classify(prof.profiler.kineto_results.events()))
    out: dict[str, float] = {}
    for idx, secs in joined.seconds.items():
        stage = timer.names[idx]
        out[stage] = out.get(stage, 0.0) + secs
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--px", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--hardware", default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled run")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    size = {} if a.px is None else {"height": a.px, "width": a.px}
    base = dict(model=a.model, steps=a.steps, sample_steps=0, device=a.device, dtype=a.dtype, warmup=1, **size)
    label = f"{a.model} {a.px or 'native'} px {a.device} {a.dtype}"
    result: dict = {"config": {**base, "hardware": a.hardware}, "environment": environment(a.device),
                    "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        traced = diffprobe.profile(**base, op_timer="profiler", hardware=a.hardware, out=f"{tmp}/traced")
        d = traced.to_dict()
        ops = traced.ops
        t = d.get("op_timer", {})
        kernel_by_stage = ops.groupby("stage")["time_s"].sum().to_dict()
        view_s = float(ops.loc[ops["layer_type"] == "view", "time_s"].sum())
        untraced = untraced_kernel_seconds(ProfileConfig(**base))
        result["traced"] = {
            "markers": t.get("markers"), "calls": t.get("calls"), "device_s": t.get("device_s"),
            "outside_markers_s": t.get("outside_markers_s"),
            "outside_share": (t.get("outside_markers_s") or 0) / (t.get("device_s") or 1), "view_rows_s": view_s,
            "stages": d["stages"], "kernel_by_stage": kernel_by_stage,
            "gpu_busy_s": d["seconds"].get("gpu_busy_s"), "gpu_idle_s": d["seconds"].get("gpu_idle_s"),
            "roofline": (d.get("roofline") or {}).get("versus_measured"),
        }
        result["untraced_kernel_by_stage"] = untraced
        result["traced_over_untraced"] = {s: kernel_by_stage.get(s, 0.0) / v for s, v in untraced.items() if v}
        print(f"{label}: markers {t.get('markers')} / calls {t.get('calls')}; outside markers "
              f"{100 * result['traced']['outside_share']:.3f}% of {t.get('device_s', 0):.4f} s; view rows {view_s} s")
        for s, v in untraced.items():
            print(f"  {s:14s} kernel traced {kernel_by_stage.get(s, 0):.4f} s untraced {v:.4f} s ratio "
                  f"{result['traced_over_untraced'].get(s, float('nan')):.3f}; busy "
                  f"{(d['seconds'].get('gpu_busy_s') or {}).get(s, float('nan')):.4f} idle "
                  f"{(d['seconds'].get('gpu_idle_s') or {}).get(s, float('nan')):.4f}")
        if not a.no_compile:
            comp = diffprobe.profile(**base, compile=True, hardware=a.hardware, out=f"{tmp}/compiled")
            c = comp.to_dict()
            cc = c["compiled"]
            result["compiled"] = {"stages": c["stages"], "compiled": cc,
                                  "by_layer_type": c["seconds"]["by_layer_type"],
                                  "roofline": (c.get("roofline") or {}).get("versus_measured")}
            print(f"  compiled: compile {cc['compile_s']:.1f} s; kernels {cc.get('kernels_matched')} / "
                  f"{cc.get('kernels')} matched; unattributed {cc.get('unattributed_s', 0):.4f} s; UNet eager "
                  f"{cc['eager']['stages'].get('unet', 0):.4f} s vs compiled {c['stages'].get('unet', 0):.4f} s")
            for lt, v in sorted(c["seconds"]["by_layer_type"].items(), key=lambda kv: -kv[1])[:8]:
                print(f"    {lt:14s} eager {cc['eager']['by_layer_type'].get(lt, 0):.4f} s compiled {v:.4f} s")
        for name, roof in (("traced", result["traced"]["roofline"]),
                           ("compiled", (result.get("compiled") or {}).get("roofline"))):
            for s, r in ((roof or {}).get("by_stage") or {}).items():
                print(f"  roofline {name} {s:14s} predicted {r['predicted_s']:.4f} s measured {r['measured_s']:.4f} s"
                      + (f" kernel-busy {r['kernel_s']:.4f} s" if "kernel_s" in r else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(standard(result), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
