"""Speed of the accelerator account: the full SD 2.1 (512 base) pipeline at 1024 px, 50 steps, analytic, on two
presets (sa-dense and sa-block64 at density 0.25, the second's dense counterpart included). Target: <= 10 s.

    python benchmarks/accel_speed.py
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffprobe  # noqa: E402
from diffprobe.hardware.environment import cpu_name  # noqa: E402
from diffprobe.run.accel import accel_run  # noqa: E402


def main() -> int:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        diffprobe.profile(model="sd21-base", mode="analytic", height=1024, width=1024, steps=50, out=f"{tmp}/run")
        t1 = time.perf_counter()
        r = accel_run(f"{tmp}/run", "sa-dense,sa-block64", density=0.25, write=False)
        t2 = time.perf_counter()
    print(f"{cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, {time.strftime('%Y-%m-%d')}")
    print(f"analytic profile {t1 - t0:.2f} s; accel account on 2 presets {t2 - t1:.2f} s (target <= 10 s)")
    for name, a in r["accel"].items():
        print(f"  {name}: {a['latency_s']:.2f} s, {a['energy_j']:.4g} J, x{a['speedup_over_dense']:.2f} vs dense, "
              f"x{a['speedup_over_gpu_roofline']:.2f} vs the {r['gpu']['preset']} roofline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
