"""A small run's own cost (building the pipeline, resolving its configuration, tracing, the report) against a baseline
revision of diffprobe, in the same session: the tiny models spend almost all their time there, and so does the test
suite.

Each revision runs in its own process (``git worktree`` for the baseline, this checkout for the other), one untimed
`profile --model MODEL --steps 2` in process, then ``--runs`` timed ones; the processes alternate ``--rounds``
times. Prints each median and the ratio of the medians (this checkout / baseline).

    python benchmarks/run_setup.py --baseline fa5bda0 [--models tiny,tiny-flux] [--rounds 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r'''
import contextlib, io, json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from diffprobe.cli import main
def one(out):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["profile", "--model", sys.argv[2], "--steps", "2", "-q", "--out", out, "--format", "json"])
with tempfile.TemporaryDirectory() as tmp:
    one(f"{tmp}/w")
    times = []
    for i in range(int(sys.argv[3])):
        t = time.perf_counter(); one(f"{tmp}/{i}"); times.append(time.perf_counter() - t)
print(json.dumps(times))
'''


def times(tree: Path, model: str, runs: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), model, str(runs)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="a git revision of diffprobe to compare with")
    ap.add_argument("--models", default="tiny,tiny-flux")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    import torch

    from diffprobe.hardware.environment import cpu_name

    result = {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads(), "baseline": args.baseline, "models": {}}
    with tempfile.TemporaryDirectory(prefix="diffprobe-baseline-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(base), args.baseline], cwd=ROOT, check=True)
        try:
            for model in args.models.split(","):
                got = {"baseline": [], "this": []}
                for _ in range(args.rounds):
                    got["baseline"] += times(base, model, args.runs)
                    got["this"] += times(ROOT, model, args.runs)
                b, t = statistics.median(got["baseline"]), statistics.median(got["this"])
                result["models"][model] = {"baseline_s": b, "this_s": t, "ratio": t / b}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
