"""Instrumentation overhead, measured side by side on the same pipeline in one process.

Four variants, each a full pipeline call, run in every round in a rotated order (round r starts with variant
r mod 4), so each variant takes each position equally often and neither drift nor order effects (allocator state
left by the previous variant) favour one of them:
  plain   - the uninstrumented diffusers pipeline call;
  stages  - with diffprobe's stage timer (issue: stage timing adds <= 1%);
  ops     - stage timer + per-op tracer with per-op timing (issue: tracing adds <= 5%);
  torch.profiler - PyTorch's own CPU profiler with shapes recorded, the tool the tracer must beat.
Prints the median wall time of each, its ratio to plain, and the median of per-round paired ratios
(variant / plain within the same round), which cancels slow drift of a shared machine.

    python benchmarks/overhead.py [--model sd15] [--size 256] [--steps 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    import torch

    from diffprobe.models.registry import get_spec
    from diffprobe.run.profile import ProfileConfig, build_pipeline, pipeline_kwargs, tracer_for
    from diffprobe.timing.stages import StageTimer

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--unet-rounds", type=int, default=10,
                    help="rounds of the UNet-only A/B (plain vs per-op tracer), alternating which goes first")
    a = ap.parse_args()
    cfg = ProfileConfig(model=a.model, height=a.size, width=a.size, steps=a.steps, sample_steps=0,
                        out="/tmp/diffprobe-bench").resolved()
    pipe = build_pipeline(cfg, get_spec(cfg.model))

    def variant(name):
        if name == "plain":
            return contextlib.nullcontext()
        if name == "stages":
            return StageTimer(pipe, cfg.device)
        if name == "torch.profiler":
            from torch.profiler import ProfilerActivity, profile

            return profile(activities=[ProfilerActivity.CPU], record_shapes=True)
        stack = contextlib.ExitStack()
        stack.enter_context(StageTimer(pipe, cfg.device))
        stack.enter_context(tracer_for(cfg, pipe, timed=True))
        return stack

    times: dict[str, list[float]] = {"plain": [], "stages": [], "ops": [], "torch.profiler": []}
    names = list(times)
    with torch.inference_mode():
        for name in names:  # warm-up: first calls under each instrumentation pay one-time setup costs
            with variant(name):
                pipe(**pipeline_kwargs(cfg, pipe))
        for r in range(a.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                kwargs = pipeline_kwargs(cfg, pipe)
                with variant(name):
                    t0 = time.perf_counter()
                    pipe(**kwargs)
                    times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {a.model} {a.size}px, {a.steps} steps, {torch.get_num_threads()} threads, {a.rounds} rounds")
    for k, v in med.items():
        paired = statistics.median(x / p for x, p in zip(times[k], times["plain"], strict=True))
        print(f"{k:14s} median {v:.3f} s  min {min(times[k]):.3f} s  ratio to plain {v / med['plain']:.4f}  "
              f"paired ratio {paired:.4f}")
    unet_ab(a, cfg, pipe)


def unet_ab(a, cfg, pipe) -> None:
    """One UNet evaluation (CFG batch), plain vs traced, back to back: the tracer's per-op cost on the hot loop
    with less noise than whole pipeline calls."""
    import torch

    from diffprobe.run.profile import tracer_for

    h, w = cfg.height // pipe.vae_scale_factor, cfg.width // pipe.vae_scale_factor
    x = torch.randn(2, pipe.unet.config.in_channels, h, w)
    t = torch.tensor(500)
    ctx = torch.randn(2, 77, pipe.unet.config.cross_attention_dim)
    times: dict[str, list[float]] = {"plain": [], "ops": []}
    with torch.inference_mode():
        for name in times:
            with tracer_for(cfg, pipe, timed=True) if name == "ops" else contextlib.nullcontext():
                pipe.unet(x, t, ctx)
        for r in range(a.unet_rounds):
            for name in ("plain", "ops") if r % 2 == 0 else ("ops", "plain"):
                tracer = tracer_for(cfg, pipe, timed=True) if name == "ops" else None
                with tracer if tracer is not None else contextlib.nullcontext():
                    t0 = time.perf_counter()
                    pipe.unet(x, t, ctx)
                if tracer is not None:
                    tracer.table()  # the timer fills the time columns here: its cost counts
                times[name].append(time.perf_counter() - t0)
    paired = statistics.median(o / p for o, p in zip(times["ops"], times["plain"], strict=True))
    print(f"UNet only, {a.unet_rounds} rounds: plain median {statistics.median(times['plain']):.3f} s, "
          f"traced median {statistics.median(times['ops']):.3f} s, paired ratio {paired:.4f}")


if __name__ == "__main__":
    main()
