"""Wall time of analytic mode (meta device, full pipeline, every step), after import.

Targets: SD 1.5 @ 512 <= 3 s, SDXL @ 1024 <= 10 s, every diffusion transformer's full pipeline at its native
resolution and default steps <= 10 s (the 2025-26 image models <= 15 s), every video model at its native size and
frames <= 30 s (Wan 2.1 14B at 1280x720 x 81 frames), on a 2-core CPU. The baseline for comparison is a measured
run of the same configuration, which on this machine takes minutes per image (see docs/benchmarks.md), or cannot
run at all (the DiTs' T5-XXL alone is 19 GB in fp32).

    python benchmarks/analytic_speed.py [MODEL ...]   (the models named; default all)
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    import sys

    from diffprobe.run.profile import ProfileConfig, run_profile

    with tempfile.TemporaryDirectory() as out:  # "after import": load diffusers' lazy modules once
        run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", out=out))
    import torch

    from diffprobe.hardware.environment import cpu_name

    print(f"CPU: {cpu_name()}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    runs = [("sd15", 512, 50), ("sd21-base", 512, 50), ("sdxl", 1024, 50), ("sdxl", 2048, 50)]
    runs += [(m, None, None) for m in ("pixart-alpha", "pixart-sigma", "sd3-medium", "sd35-large", "flux-dev",
                                       "flux-schnell", "sana-1600m", "sd35-medium", "z-image-turbo",
                                       "flux2-dev", "qwen-image", "hidream-i1-full", "hidream-i1-dev",
                                       "hidream-i1-fast", "wan21-t2v-1.3b", "wan21-t2v-14b", "cogvideox-5b",
                                       "ltx-video", "mochi-1", "hunyuan-video", "wan22-t2v-a14b")]  # native sizes
    chosen = set(sys.argv[1:])
    for model, size, steps in runs:
        if chosen and model not in chosen:
            continue
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            r = run_profile(ProfileConfig(model=model, height=size, width=size, steps=steps, mode="analytic",
                                          out=out))
            wall = time.perf_counter() - t0
        d = r.to_dict()
        frames = f" x {d['frames']:3d} frames" if d.get("frames") else ""
        print(f"{model:15s} {d['height']:5d}x{d['width']}px{frames}  {d['steps']:2d} steps "
              f"({d['denoiser_evals']} denoiser evals)  "
              f"wall {wall:.2f} s  {d['flops']['total'] / 1e12:.1f} TFLOP  {len(r.ops)} op records")


if __name__ == "__main__":
    main()
