"""Wall time of analytic mode (meta device, full pipeline, every step), after import.

Targets: SD 1.5 @ 512 <= 3 s, SDXL @ 1024 <= 10 s on a 2-core CPU. The baseline for comparison is a measured
run of the same configuration, which on this machine takes minutes per image (see docs/benchmarks.md).

    python benchmarks/analytic_speed.py
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    from diffprobe.run.profile import ProfileConfig, run_profile

    with tempfile.TemporaryDirectory() as out:  # "after import": load diffusers' lazy modules once
        run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", out=out))
    for model, size in (("sd15", 512), ("sd21-base", 512), ("sdxl", 1024), ("sdxl", 2048)):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            r = run_profile(ProfileConfig(model=model, height=size, width=size, steps=50, mode="analytic", out=out))
            wall = time.perf_counter() - t0
        d = r.to_dict()
        print(f"{model:9s} {size:5d}px  50 steps ({d['unet_evals']} UNet evals)  wall {wall:.2f} s  "
              f"{d['flops']['total'] / 1e12:.1f} TFLOP  {len(r.ops)} op records")


if __name__ == "__main__":
    main()
