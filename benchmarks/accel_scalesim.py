"""The accelerator model's GEMM cycles against SCALE-Sim v3 on real Stable Diffusion layer shapes (goal: within
10%), on a 32x32 array in all three dataflows. SCALE-Sim generates full address traces, so each shape takes up to a
minute; it runs in its own venv (tests/reference/scalesim_ref.py).

    python benchmarks/accel_scalesim.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffprobe.hardware.accel import mapping  # noqa: E402
from tests.reference import scalesim_ref  # noqa: E402

# (name, M, K, N): SD 1.5 at 256 px, batch 1 (SCALE-Sim's trace generation makes 512 px shapes take many minutes)
SHAPES = [
    ("down.0 attn to_q 320->320 (1024 tokens)", 1024, 320, 320),
    ("down.0 attn scores, one head (d=40)", 1024, 40, 1024),
    ("down.0 ff proj 320->2560", 1024, 320, 2560),
    ("down.2 conv 3x3 640->640 (im2col, 256 px)", 256, 5760, 640),
    ("mid conv 3x3 1280->1280 (im2col)", 16, 11520, 1280),
    ("cross-attn to_k 768->320 (77 tokens)", 77, 768, 320),
]


def main() -> int:
    import subprocess

    rows = cols = 32
    print(f"SCALE-Sim v3 vs diffprobe, {rows}x{cols} array, {time.strftime('%Y-%m-%d')}")
    print("| layer | M x K x N | dataflow | SCALE-Sim cycles | diffprobe cycles | error | SCALE-Sim s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for name, m, k, n in SHAPES:
        for df in ("os", "ws", "is"):
            t0 = time.perf_counter()
            try:
                (want,) = scalesim_ref.cycles([(m, n, k, rows, cols, df)], timeout=400)
            except subprocess.TimeoutExpired:
                print(f"| {name} | {m} x {k} x {n} | {df} | timed out (400 s) | | | |", flush=True)
                continue
            mp = mapping(m, k, n, rows, cols, df)
            ours = mp.folds * mp.cycles_per_fold
            err = ours / want - 1
            worst = max(worst, abs(err))
            print(f"| {name} | {m} x {k} x {n} | {df} | {want} | {ours} | {100 * err:+.4f}% | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)
    print(f"worst error {100 * worst:.4f}% (goal: within 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
