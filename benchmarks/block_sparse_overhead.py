"""Where a block-sparse call's time goes besides the kernel: the all-kept check, the conversion of the boolean
mask into FlexAttention's block index, the whole prepared layout, the compiled kernel on a prepared layout, the
full call from a boolean mask, and the `block` method's predictor (pooled Q/K block mass) — each timed alone, host
wall clock after a device sync (medians of --repeats). On CUDA the host time is what a call costs when the GPU
waits for it.

    python benchmarks/block_sparse_overhead.py [--device cuda] [--dtype float16] [--tokens 4096] [--heads 5]
        [--head-dim 64] [--block-size 64] [--density 0.25]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    import torch

    from diffprobe.attention.approx import ApproxAttention, compiled_predictor, predict_block_index
    from diffprobe.attention.bench import DTYPES, random_block_mask
    from diffprobe.attention.kernels import BlockLayout, block_sparse_attention, to_flex_block_mask

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=5)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--density", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50)
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(a.batch, a.heads, a.tokens, a.head_dim, generator=g).to(dev, DTYPES[a.dtype])
               for _ in range(3))
    nb = -(-a.tokens // a.block_size)
    mask = random_block_mask(a.heads, nb, nb, a.density, g, a.batch).to(dev)
    layout = BlockLayout(mask, a.tokens, a.tokens, a.block_size)
    core = ApproxAttention("block", 0.5, block=a.block_size)

    def med(fn):
        fn()
        sync()
        ts = []
        for _ in range(a.repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    parts = {
        "all-kept check (sync)": lambda: bool(mask.all()),
        "mask -> BlockMask": lambda: to_flex_block_mask(mask, a.tokens, a.tokens, a.block_size),
        "BlockLayout (check, all-kept, BlockMask)": lambda: BlockLayout(mask, a.tokens, a.tokens, a.block_size),
        "kernel on a prepared layout": lambda: block_sparse_attention(q, k, v, layout, a.block_size),
        "full call from a boolean mask": lambda: block_sparse_attention(q, k, v, mask, a.block_size),
        "block method's predictor (tau 0.5)": lambda: core._block_mask(q, k),
        "predictor -> block index, eager (tau 0.5)": lambda: predict_block_index(q, k, 0.5, a.block_size),
        "predictor -> block index, compiled (tau 0.5)": lambda: compiled_predictor()(q, k, 0.5, a.block_size),
        "dense SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
    }
    print(f"{a.device} {a.dtype} batch {a.batch} heads {a.heads} x {a.head_dim} tokens {a.tokens} "
          f"block {a.block_size} kept {layout.kept_fraction:.3f} backend {layout.backend} torch {torch.__version__}")
    times = {}
    for name, fn in parts.items():
        times[name] = med(fn)
        print(f"  {name:46s} {times[name] * 1e3:8.3f} ms", flush=True)
    dense = times["dense SDPA"]
    for name in ("predictor -> block index, eager (tau 0.5)", "predictor -> block index, compiled (tau 0.5)"):
        print(f"{name}: {times[name] / dense:.1%} of the dense call (target <= 10%)")


if __name__ == "__main__":
    main()
