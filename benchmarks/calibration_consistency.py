"""Do a calibration's curves agree with each other? Quick calibrations with and without the light probe
(:class:`~diffprobe.hardware.steadiness.Speedometer`), alternated, against the same operators timed back to back.

Each calibration: ``calibrate("quick")`` and the block-sparse kernel's quick curve, as ``hardware calibrate --quick``
times them (the overhead fits left out: they are not FLOP curves). From each, four ratios the predictions depend on:
the kernel's rate over SDPA's (4096 tokens, head dim 40, every block kept; a ``block`` setting's saving is set by
it), SDPA's over the GEMM's ((4096, 4096, 40) over (1024, 1280, 1280)), and an add's and a silu's bytes/s over the
GEMM's FLOP/s (x 1000; 16 MiB moved by the add, the silu on the same input: memory curves, scaled by the copy probe
and the GEMM probe). The same ratios timed back to back
(``--truth N`` rounds, 4 heads) are what a machine at one speed gives. A calibration that times its curves at one
speed reproduces them across calibrations; one whose curves met different minutes of a shared machine does not.

    python benchmarks/calibration_consistency.py [--rounds 3] [--truth 6]

Prints one JSON object: each calibration's ratios and probes, the truth pairs, and per side the ratios' spread
((max - min) / median) and median's distance from the truth's median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time

ADD_N = (16 << 20) // 12  # a + b -> c of 16 MiB moved (elements); silu on it moves two thirds of that


def ratios(table: dict) -> dict:
    import numpy as np

    from diffprobe.analyses.predict import attention_seconds, grid_rate, memory_seconds

    kernel = attention_seconds(table, 4096, 4096, 40, 16, 1.0)
    sdpa = attention_seconds(table, 4096, 4096, 40, 16)
    gemm = float(grid_rate(table["gemm"], ["m", "n", "k"], np.array([[1024, 1280, 1280]]))[0])
    add, silu = (float(memory_seconds(table, c, [moved], [0])[0])
                 for c, moved in (("elementwise", 12 * ADD_N), ("activation", 8 * ADD_N)))
    return {"kernel/sdpa": sdpa / kernel, "sdpa/gemm": 4.0 * 16 * 4096 * 4096 * 40 / sdpa / gemm,
            "add/gemm": 12 * ADD_N / add / gemm * 1e3, "silu/gemm": 8 * ADD_N / silu / gemm * 1e3}


def calibration(normalized: bool) -> dict:
    from diffprobe.attention.bench import KERNEL_GRIDS, kernel_curve
    from diffprobe.hardware.calibrate import calibrate
    from diffprobe.hardware.passes import scale_flop_curves, scale_memory_curves
    from diffprobe.hardware.probes import light_speeds
    from diffprobe.hardware.steadiness import MEMORY_SPEED, SPEED_FROM_BYTES, Speedometer, speed_normalized

    meter = Speedometer(light_speeds)
    started = time.perf_counter()
    with speed_normalized(meter) if normalized else contextlib.nullcontext():
        table = calibrate("quick")
        table["block_sparse"] = kernel_curve(KERNEL_GRIDS["quick"])
    if normalized:
        scale_flop_curves(table, meter.to_median())
        scale_memory_curves(table, lambda cls: meter.to_median(MEMORY_SPEED[cls]), SPEED_FROM_BYTES)
    return {"normalized": normalized, "seconds": time.perf_counter() - started, "probes": len(meter.samples),
            **ratios(table)}


def truth(pairs: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from diffprobe.attention.kernels import BlockLayout, block_sparse_attention
    from diffprobe.hardware.calibrate import typical_seconds

    q, k, v = (torch.randn(1, 4, 4096, 40) for _ in range(3))
    layout = BlockLayout(torch.ones(1, 4, 64, 64, dtype=torch.bool), 4096, 4096, 64, check_all_kept=False)
    a, w = torch.randn(1024, 1280), torch.randn(1280, 1280)
    x, y = torch.randn(ADD_N), torch.randn(ADD_N)
    out = []
    for _ in range(pairs):
        kernel = typical_seconds(lambda: block_sparse_attention(q, k, v, layout, 64), 3)
        sdpa = typical_seconds(lambda: F.scaled_dot_product_attention(q, k, v), 3)
        gemm = typical_seconds(lambda: F.linear(a, w), 3)
        add = typical_seconds(lambda: torch.add(x, y), 3)
        silu = typical_seconds(lambda: F.silu(x), 3)
        gemm_rate = 2.0 * 1024 * 1280 * 1280 / gemm
        out.append({"kernel/sdpa": sdpa / kernel, "sdpa/gemm": (4.0 * 4 * 4096 * 4096 * 40 / sdpa) / gemm_rate,
                    "add/gemm": 12 * ADD_N / add / gemm_rate * 1e3, "silu/gemm": 8 * ADD_N / silu / gemm_rate * 1e3})
    return out


def main() -> None:
    import torch

    from diffprobe.hardware.environment import cpu_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="calibrations of each kind, alternated")
    ap.add_argument("--truth", type=int, default=6, help="back-to-back timings of the five operators")
    args = ap.parse_args()
    runs = [calibration(normalized) for _ in range(args.rounds) for normalized in (False, True)]
    pairs = truth(args.truth)
    summary = {}
    for key in ("kernel/sdpa", "sdpa/gemm", "add/gemm", "silu/gemm"):
        mid = statistics.median(p[key] for p in pairs)
        summary[key] = {"truth_median": mid}
        for side, normalized in (("as_timed", False), ("one_speed", True)):
            vals = [r[key] for r in runs if r["normalized"] is normalized]
            med = statistics.median(vals)
            summary[key][side] = {"spread": (max(vals) - min(vals)) / med, "median_vs_truth": med / mid - 1}
    print(json.dumps({"machine": platform.node(), "cpu": cpu_name(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "calibrations": runs,
                      "truth": pairs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
