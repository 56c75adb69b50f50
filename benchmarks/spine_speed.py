"""Analytic mode's wall time against an earlier revision, in the same run: the spine refactor (issue 25) must not
make it slower. Timed: the analytic profile, and the profile with its report (what ``diffprobe profile`` does;
the findings are now computed by the run and stored, where the report used to compute them).

For each configuration of ``benchmarks/analytic_speed.py`` the current tree and a git worktree of ``--baseline``
(default: the commit before the refactor) each run the analytic profile in a fresh process (imports warmed once),
alternately, ``--repeat`` times; the medians and their ratio (current / baseline) are printed.

    python benchmarks/spine_speed.py [--baseline REV] [--repeat 3] [--models sd15,qwen-image,...]

``--models`` times those models (at their native size and default steps; SD 1.5 at 512 px, SDXL at 1024 px)
instead of the default set; it served for the lazy replay of analytic records (issue 26: Qwen-Image's 869k
records).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("sd15", 512, 50), ("sdxl", 1024, 50), ("pixart-sigma", None, None), ("sd3-medium", None, None),
           ("flux-dev", None, None), ("sana-1600m", None, None)]
DRIVER = r"""
import json, os, sys, tempfile, time
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from diffprobe.report.html import build_report
from diffprobe.run.profile import ProfileConfig, run_profile
with tempfile.TemporaryDirectory() as out:  # warm: diffusers' lazy modules, the formula registry
    run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", out=out))
model, size, steps = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    r = run_profile(ProfileConfig(model=model, height=size, width=size, steps=steps, mode="analytic", out=out))
    run_s = time.perf_counter() - t0
    build_report(out)  # what `diffprobe profile` does next (the findings moved from here into the run)
    wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "run": run_s, "flops": int(r.to_dict()["flops"]["total"])}))
"""


def _time(tree: Path, config) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(config)], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="71adb1a", help="the revision to compare with (default: before issue 25's "
                    "refactor of run/, report/ and the CLI)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", default="", help="comma-separated models instead of the default set")
    args = ap.parse_args()
    sizes = {"sd15": (512, 50), "sdxl": (1024, 50)}
    configs = [(m, *sizes.get(m, (None, None))) for m in args.models.split(",") if m] or CONFIGS
    import torch

    from diffprobe.hardware.environment import cpu_name

    print(f"CPU: {cpu_name()}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} "
          f"threads; baseline {args.baseline}, {args.repeat} runs each, alternating")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                       check=True, capture_output=True)
        try:
            for config in configs:
                walls: dict[str, list[float]] = {"current": [], "baseline": []}
                runs: dict[str, list[float]] = {"current": [], "baseline": []}
                flops = {}
                for _ in range(args.repeat):
                    for name, tree in (("baseline", base), ("current", ROOT)):
                        r = _time(tree, config)
                        walls[name].append(r["wall"])
                        runs[name].append(r["run"])
                        flops[name] = r["flops"]
                cur, old = (statistics.median(walls[k]) for k in ("current", "baseline"))
                rc, ro = (statistics.median(runs[k]) for k in ("current", "baseline"))
                same = "same FLOPs" if flops["current"] == flops["baseline"] else "FLOPs DIFFER"
                print(f"{config[0]:15s} profile + report: current {cur:6.2f} s  baseline {old:6.2f} s  ratio "
                      f"{cur / old:.3f};  profile alone: {rc:6.2f} s vs {ro:6.2f} s, ratio {rc / ro:.3f}  ({same})")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)


if __name__ == "__main__":
    main()
