"""The Ray executor against the local one, in the same run (issue 29's targets).

1. An 8-point analytic sweep (``--model``, default SD 1.5, 256-1152 px), once with ``--executor local`` and once with
   ``--executor ray`` (a local Ray instance started by the command, as a user's first run would): the wall time of
   each command, their ratio (ray / local), and whether every point's ``ops.parquet`` and the findings are the same
   byte for byte.
2. ``approx --model digits --prompts`` over ``--prompts`` digit prompts (default 50), both executors: the wall time
   of each and whether the campaign's metrics are equal.

    python benchmarks/ray_executor.py [--model sd15] [--prompts 50] [--skip-campaign]

Prints one JSON object (machine, CPU model, cpu_capability, torch, ray, the times and equalities).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = "256,384,512,640,768,896,1024,1152"


def _cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffprobe", *args, "-q", "--format", "json"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def sweep(tmp: Path, model: str) -> dict:
    out = {}
    for ex in ("local", "ray"):
        out[f"{ex}_s"] = _cli(["sweep", "--model", model, "--resolutions", SIDES, "--out", str(tmp / ex),
                               "--executor", ex])
    points = sorted(p.name for p in (tmp / "local" / "points").iterdir())
    same = all((tmp / "local" / "points" / p / "ops.parquet").read_bytes() ==
               (tmp / "ray" / "points" / p / "ops.parquet").read_bytes() for p in points)
    findings = [json.loads((tmp / ex / "sweep.json").read_text())["findings"] for ex in ("local", "ray")]
    return {**out, "ratio_ray_over_local": out["ray_s"] / out["local_s"], "points": len(points),
            "ops_parquet_identical": same, "findings_identical": findings[0] == findings[1]}


def campaign(tmp: Path, n: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from diffprobe.models import digits

    prompts = tmp / "prompts.txt"
    prompts.write_text("".join(digits.prompt(i % 10, (i // 10) % 3) + "\n" for i in range(n)))
    out = {}
    for ex in ("local", "ray"):
        out[f"{ex}_s"] = _cli(["approx", "--model", "digits", "--method", "threshold", "--eps", "0.01", "--steps", "10",
                               "--per-digit", "1", "--prompts", str(prompts), "--out", str(tmp / f"a-{ex}"),
                               "--executor", ex])
    got = [json.loads((tmp / f"a-{ex}" / "approx.json").read_text())["campaign"]["settings"] for ex in ("local", "ray")]
    return {**out, "prompts": n, "metrics_identical": got[0] == got[1],
            "threshold_psnr": got[1][1]["psnr"], "threshold_digit_share": got[1][1].get("accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--skip-campaign", action="store_true")
    args = ap.parse_args()
    import ray
    import torch

    result = {"machine": platform.node(), "cpu": _cpu(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "cores": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__,
              "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="diffprobe-ray-bench-") as tmp:
        result["sweep"] = {"model": args.model, "sides": SIDES, **sweep(Path(tmp), args.model)}
        if not args.skip_campaign:
            result["campaign"] = campaign(Path(tmp), args.prompts)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
