"""Do the light probes track the operators a calibration times after them? (docs/prediction.md, "Every curve at one
speed").

For ``--seconds`` (default 150): a light GEMM probe and a light copy probe (:mod:`diffprobe.hardware.probes`), then
each operator below timed as a calibration times a point (``typical_seconds``, three runs), over and over. Per
operator: the p10-p90 spread of its rate (over the median) as timed, over the GEMM probe's rate and over the copy
probe's, and the correlation of its log rate with each probe's. A probe that tracks an operator makes the spread over
it smaller than as timed: that is what scaling a calibration's points by the probe (the Speedometer) relies on.

    python benchmarks/probe_tracking.py [--seconds 150] [--json FILE]

Prints one JSON object (machine, cpu_capability, torch, threads, samples, per operator the spreads and correlations);
``--json`` also writes every sample.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import time
from pathlib import Path


def operators():
    """name -> (call, FLOPs or bytes moved, unit): shapes the embedded models run."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)

    def rand(*s):
        return torch.randn(*s, generator=g)

    xa, wa = rand(1, 512, 64, 64), rand(512, 512, 3, 3)  # VAE decoder at 512 px
    xb, wb = rand(2, 320, 32, 32), rand(320, 320, 3, 3)  # UNet level 0 at 256 px
    xc, wc = rand(1, 128, 256, 256), rand(128, 128, 3, 3)  # VAE decoder's last level at 512 px
    a, w = rand(512, 1152), rand(4608, 1152)  # PixArt feed-forward
    n = (16 << 20) // 12  # an add moving 16 MiB
    u, v = rand(n), rand(n)
    h = rand(2, 320, 64, 64)  # a UNet group norm at 512 px
    return {
        "conv_vae_512ch": (lambda: F.conv2d(xa, wa, padding=1), 2 * 64 * 64 * 512 * 512 * 9, "flop"),
        "conv_unet_320ch": (lambda: F.conv2d(xb, wb, padding=1), 2 * 2 * 32 * 32 * 320 * 320 * 9, "flop"),
        "conv_vae_128ch": (lambda: F.conv2d(xc, wc, padding=1), 2 * 256 * 256 * 128 * 128 * 9, "flop"),
        "gemm_ffn": (lambda: F.linear(a, w), 2 * 512 * 4608 * 1152, "flop"),
        "add_16MiB": (lambda: u + v, 12 * n, "byte"),
        "silu": (lambda: F.silu(u), 8 * n, "byte"),
        "group_norm": (lambda: F.group_norm(h, 32), 8 * h.numel(), "byte"),
    }


def summary(rows: list[dict], names: list[str]) -> dict:
    """Per operator: spread (p10-p90 over the median) as timed and over each probe, log correlation with each."""
    import numpy as np

    def spread(x):
        return float((np.percentile(x, 90) - np.percentile(x, 10)) / np.median(x))

    gemm, copy = (np.array([r[p] for r in rows]) for p in ("gemm_probe", "copy_probe"))
    out = {}
    for k in names:
        x = np.array([r[k] for r in rows])
        out[k] = {"as_timed": spread(x), "over_gemm_probe": spread(x / gemm), "over_copy_probe": spread(x / copy),
                  "corr_gemm_probe": float(np.corrcoef(np.log(x), np.log(gemm))[0, 1]),
                  "corr_copy_probe": float(np.corrcoef(np.log(x), np.log(copy))[0, 1])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--json", default=None, help="also write every sample here")
    args = ap.parse_args()
    if not args.seconds > 0:  # one line, exit 2, before anything is timed
        sys.stderr.write(f"probe_tracking.py: error: --seconds {args.seconds}: more than 0\n")
        sys.exit(2)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from diffprobe.hardware.calibrate import typical_seconds
    from diffprobe.hardware.environment import cpu_name
    from diffprobe.hardware.probes import light_bandwidth, light_rate

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # SIGTERM as Ctrl-C: what was sampled is summarized
    ops = operators()
    rows: list[dict] = []
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            while time.perf_counter() - start < args.seconds:
                row = {"t": time.perf_counter() - start, "gemm_probe": light_rate(), "copy_probe": light_bandwidth()}
                row.update({k: amount / typical_seconds(fn, 3) for k, (fn, amount, _) in ops.items()})
                rows.append(row)
    except KeyboardInterrupt:  # what was sampled is summarized
        pass
    if len(rows) < 3:
        sys.stderr.write(f"probe_tracking.py: error: {len(rows)} samples, fewer than three: give it more --seconds\n")
        sys.exit(2)
    result = {"machine": platform.node(), "cpu": cpu_name(), "cpu_capability":
              torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": rows[-1]["t"],
              "samples": len(rows), "units": {k: u for k, (_, _, u) in ops.items()},
              "operators": summary(rows, list(ops))}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "rows": rows}, f, indent=1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
