"""The two per-op timers on the CPU: marks around each op (``--op-timer clock``) vs torch.profiler's CPU op events
joined to the records (``--op-timer profiler``), against the plain UNet in the same run.

One CFG-batched UNet evaluation of SD 1.5 at 256 px (the smallest ops: the hard case), per round: plain, traced
with each timer (the timer's fill after the run is inside the timed region), in a rotated order. Prints the
median of per-round paired ratios (traced / plain: the cost of each timer) and, for each timer, how much of the
plain UNet time its per-record times account for (closeness to an uninstrumented run).

    python benchmarks/op_timers.py [--rounds 6] [--size 256]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    import torch

    from diffprobe.hardware.environment import cpu_name
    from diffprobe.models.registry import get_spec
    from diffprobe.run.profile import ProfileConfig, build_pipeline, tracer_for

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    cfgs = {t: ProfileConfig(model=a.model, height=a.size, width=a.size, steps=1, sample_steps=0, op_timer=t,
                             out="/tmp/diffprobe-bench").resolved() for t in ("clock", "profiler")}
    pipe = build_pipeline(cfgs["clock"], get_spec(a.model))
    h, w = a.size // pipe.vae_scale_factor, a.size // pipe.vae_scale_factor
    x = torch.randn(2, pipe.unet.config.in_channels, h, w)
    t = torch.tensor(500)
    ctx = torch.randn(2, 77, pipe.unet.config.cross_attention_dim)
    names = ["plain", "clock", "profiler"]
    times: dict[str, list[float]] = {n: [] for n in names}
    accounted: dict[str, list[float]] = {"clock": [], "profiler": []}

    def one(name: str) -> float:
        tracer = None if name == "plain" else tracer_for(cfgs[name], pipe, timed=True)
        with tracer if tracer is not None else contextlib.nullcontext():
            t0 = time.perf_counter()
            pipe.unet(x, t, ctx)
        ops = tracer.table() if tracer is not None else None
        wall = time.perf_counter() - t0
        if ops is not None:
            accounted[name].append(float(ops["time_s"].sum()))
        return wall

    with torch.inference_mode():
        for name in names:  # warm-up
            one(name)
        accounted = {k: [] for k in accounted}
        for r in range(a.rounds):
            for name in names[r % 3:] + names[:r % 3]:
                times[name].append(one(name))
    print(f"{a.model} UNet at {a.size} px (CFG batch), {a.rounds} rounds, {torch.get_num_threads()} threads, "
          f"{cpu_name()}, capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    plain = statistics.median(times["plain"])
    for name in ("clock", "profiler"):
        paired = statistics.median(v / p for v, p in zip(times[name], times["plain"], strict=True))
        share = statistics.median(accounted[name]) / plain
        print(f"{name:9s} median {statistics.median(times[name]):.3f} s  paired ratio to plain {paired:.4f}  "
              f"per-record times sum to {100 * share:.1f}% of the plain UNet time")
    print(f"plain     median {plain:.3f} s")


if __name__ == "__main__":
    main()
