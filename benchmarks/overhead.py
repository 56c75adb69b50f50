"""Instrumentation overhead, measured side by side on the same pipeline in one process.

Three variants run in alternation (so drift on a shared machine hits all alike), each a full pipeline call:
  plain   - the uninstrumented diffusers pipeline call;
  stages  - with diffprobe's stage timer (issue: stage timing adds <= 1%);
  ops     - stage timer + per-op tracer with per-op timing (issue: tracing adds <= 5%);
  torch.profiler - PyTorch's own CPU profiler with shapes recorded, the tool the tracer must beat.
Prints the median wall time of each and the ratios to plain.

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
    from diffprobe.run.profile import ProfileConfig, _tracer, build_pipeline, pipeline_kwargs
    from diffprobe.run.stages import StageTimer

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
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
        stack.enter_context(_tracer(cfg, pipe, timed=True))
        return stack

    times: dict[str, list[float]] = {"plain": [], "stages": [], "ops": [], "torch.profiler": []}
    with torch.inference_mode():
        pipe(**pipeline_kwargs(cfg, pipe))  # warm-up
        for r in range(a.rounds):
            for name in times:
                kwargs = pipeline_kwargs(cfg, pipe)
                with variant(name):
                    t0 = time.perf_counter()
                    pipe(**kwargs)
                    times[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {a.model} {a.size}px, {a.steps} steps, {torch.get_num_threads()} threads, {a.rounds} rounds")
    for k, v in med.items():
        print(f"{k:14s} median {v:.3f} s  min {min(times[k]):.3f} s  ratio to plain {v / med['plain']:.4f}")


if __name__ == "__main__":
    main()
