"""Wall time of an analytic sweep: SD 2.1 (768, v-prediction) over 256…2048 px, 6 points, 50 steps each.

Target (issue: scaling study): <= 30 s on a 2-core CPU, after import. The baseline printed beside it is one
*measured* UNet evaluation at 512 px on the same machine, scaled by the sweep's UNet evaluations — what the same
sweep would cost if it had to run (a lower bound: larger sides cost more per evaluation).

    python benchmarks/sweep_speed.py
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    from diffprobe.run.profile import ProfileConfig, run_profile
    from diffprobe.run.sweep import SweepConfig, parse_resolutions, run_sweep

    with tempfile.TemporaryDirectory() as out:  # "after import": load diffusers' lazy modules once
        run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", out=out))
    with tempfile.TemporaryDirectory() as out:
        sc = SweepConfig(base=ProfileConfig(model="sd21", steps=50, mode="analytic"),
                         resolutions=parse_resolutions("256,512,768,1024,1536,2048"), out=out + "/sweep")
        t0 = time.perf_counter()
        state = run_sweep(sc)
        wall = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        r = run_profile(ProfileConfig(model="sd21", height=512, width=512, steps=50, sample_steps=1, out=out,
                                      trace_ops=False))
    step = r.stages["unet"]
    baseline = step * r.denoiser_evals * 6
    print(f"analytic sweep sd21, 6 points x 50 steps: wall {wall:.2f} s (target <= 30 s), "
          f"{len(state['findings']['points'])} points")
    print(f"baseline: one measured UNet evaluation at 512 px = {step:.2f} s; x {r.denoiser_evals} evals x 6 points "
          f">= {baseline:.0f} s; ratio analytic / measured <= {wall / baseline:.5f}")


if __name__ == "__main__":
    main()
