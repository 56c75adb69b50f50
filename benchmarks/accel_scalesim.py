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

# (name, M, K, N): SD 1.5 at 512 px, batch 1 (CFG halves in one batch would double M)
SHAPES = [
    ("down.0 conv 3x3 320->320 (im2col)", 4096, 2880, 320),
    ("down.0 attn to_q 320->320", 4096, 320, 320),
    ("down.0 attn scores (one head, d=40)", 4096, 40, 4096),
    ("down.0 ff proj 320->2560", 4096, 320, 2560),
    ("mid conv 3x3 1280->1280 (im2col)", 64, 11520, 1280),
    ("cross-attn to_k 768->320 (77 tokens)", 77, 768, 320),
]


def main() -> int:
    rows = cols = 32
    gemms = [(m, n, k, rows, cols, df) for _, m, k, n in SHAPES for df in ("os", "ws", "is")]
    t0 = time.perf_counter()
    ref = scalesim_ref.cycles(gemms)
    print(f"SCALE-Sim v3, {rows}x{cols} array, {time.perf_counter() - t0:.0f} s, {time.strftime('%Y-%m-%d')}")
    print("| layer | M x K x N | dataflow | SCALE-Sim cycles | diffprobe cycles | error |")
    print("| --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    for (m, n, k, r, c, df), want in zip(gemms, ref, strict=True):
        name = next(s[0] for s in SHAPES if (s[1], s[2], s[3]) == (m, k, n))
        mp = mapping(m, k, n, r, c, df)
        ours = mp.folds * mp.cycles_per_fold
        err = ours / want - 1
        worst = max(worst, abs(err))
        print(f"| {name} | {m} x {k} x {n} | {df} | {want} | {ours} | {100 * err:+.4f}% |")
    print(f"worst error {100 * worst:.4f}% (goal: within 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
