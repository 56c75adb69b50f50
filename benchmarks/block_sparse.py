"""Block-sparse attention vs dense SDPA on this machine, timed in the same run (best of 3 after a warm-up).

Grid: tokens × kept-block density, SD head shapes (heads 8, head_dim 40 unless given), block size 64; each
query block keeps the same number of key blocks, chosen at random. Prints dense_s, sparse_s, speedup and the
relative error against the float64 masked reference (checked on the first head only, to keep it quick).

    python benchmarks/block_sparse.py [--tokens 1024,4096] [--density 1,0.5,0.25,0.1] [--heads 8] [--head-dim 40]
"""

from __future__ import annotations

import argparse
import math
import time


def main() -> None:
    import torch
    import torch.nn.functional as F

    from diffprobe.attention.kernels import block_sparse_attention, masked_reference

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="1024,4096")
    ap.add_argument("--density", default="1,0.5,0.25,0.1")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=40)
    ap.add_argument("--block-size", type=int, default=64)
    a = ap.parse_args()

    def best(fn, r=3):
        fn()
        t = math.inf
        for _ in range(r):
            t0 = time.perf_counter()
            fn()
            t = min(t, time.perf_counter() - t0)
        return t

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, heads {a.heads}, head_dim {a.head_dim}, "
          f"block {a.block_size}")
    for n in (int(x) for x in a.tokens.split(",")):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, a.heads, n, a.head_dim, generator=g) for _ in range(3))
        nb = math.ceil(n / a.block_size)
        dense = best(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        for dens in (float(x) for x in a.density.split(",")):
            keep = max(1, round(dens * nb))
            mask = torch.rand(1, a.heads, nb, nb, generator=g).argsort(-1) < keep
            sparse = best(lambda q=q, k=k, v=v, mask=mask: block_sparse_attention(q, k, v, mask, a.block_size))
            out = block_sparse_attention(q[:, :1], k[:, :1], v[:, :1], mask[:, :1], a.block_size)
            ref = masked_reference(q[:, :1], k[:, :1], v[:, :1], mask[:, :1], a.block_size)
            err = float((out.double() - ref).abs().max() / ref.abs().max())
            print(f"tokens {n:6d} density {keep / nb:5.3f}: dense_s {dense:.4f} sparse_s {sparse:.4f} "
                  f"speedup {dense / sparse:5.2f} (limit {nb / keep:5.1f})  max_rel_error {err:.2e}")


if __name__ == "__main__":
    main()
