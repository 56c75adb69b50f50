"""Block-sparse attention over 3D tiles of a video's latent grid against dense SDPA, timed in one run: Wan 2.1
1.3B's heads x head dim (12 x 128), float32, on a latent grid of 16 x 32 x 32 = 16,384 tokens in tiles of
4 x 8 x 8 (256 tokens; 64 tiles), each query tile keeping 25% of the key tiles (16 of 64, chosen at random per head)
and Sliding Tile Attention's window (the tiles within one tile along each axis). The tiled call includes putting
q, k, v in tile order and the output back. Target (issue 27): >= 3x dense at 25% kept on 2 cores.

    python benchmarks/block_sparse_3d.py [--grid 16x32x32] [--tile 4x8x8] [--heads 12] [--head-dim 128]
        [--repeats 3] [--backend auto]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time


def main() -> None:
    import torch
    import torch.nn.functional as F

    from diffprobe.attention.kernels import BlockLayout
    from diffprobe.attention.tiles import parse_tile, tile_order, tiled_attention, window_tile_mask
    from diffprobe.hardware.environment import cpu_name

    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="16x32x32")
    ap.add_argument("--tile", default="4x8x8")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", default="auto")
    a = ap.parse_args()
    grid, tile = parse_tile(a.grid, "--grid"), parse_tile(a.tile, "--tile")
    n, tiles = math.prod(grid), math.prod(grid) // math.prod(tile)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, a.heads, n, a.head_dim, generator=g) for _ in range(3))
    keep = tiles // 4
    ranks = torch.rand(1, a.heads, tiles, tiles, generator=g).argsort(-1).argsort(-1)
    masks = {"random 25%": ranks < keep,  # exactly a quarter of the key tiles per query tile
             "window 1x1x1": window_tile_mask(grid, tile, (1, 1, 1))}
    order = tile_order(grid, tile)
    print(f"CPU: {cpu_name()}, capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}")
    print(f"grid {a.grid} ({n} tokens), tile {a.tile} ({math.prod(tile)} tokens, {tiles} tiles), "
          f"{a.heads} heads x {a.head_dim}, float32, medians of {a.repeats}")
    for name, mask in masks.items():
        kept = float(mask.float().mean())
        backend = BlockLayout(mask, n, n, math.prod(tile), backend=a.backend).backend
        fns = {"dense": lambda: F.scaled_dot_product_attention(q, k, v),
               "tiled": lambda mask=mask: tiled_attention(q, k, v, mask, grid, tile, backend=a.backend, order=order)}
        for fn in fns.values():  # warm-up (the C++ extension builds on first use)
            fn()
        times = {key: [] for key in fns}
        for _ in range(a.repeats):  # interleaved: drifts in clock or load hit both alike
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        d, s = statistics.median(times["dense"]), statistics.median(times["tiled"])
        print(f"{name:13s} kept {kept:.3f}  dense {d:.3f} s  tiled {s:.3f} s ({backend})  speedup {d / s:.2f}x "
              f"(limit {1 / kept:.2f}x, efficiency {d * kept / s:.2f})", flush=True)
        if name.startswith("random"):
            verdict = "met" if d / s >= 3 else f"missed by {3 - d / s:.2f}x"
            print(f"target >= 3x dense at 25% kept: {verdict}")


if __name__ == "__main__":
    main()
