"""3D tiles of a video's latent grid: attention blocks that are t x h x w boxes of tokens, not runs of the flattened
sequence.

A video DiT flattens its latent grid (T frames x H x W patches) frame by frame, row by row; a run of b tokens of
that order is a strip of rows of one frame. Sliding Tile Attention (Zhang et al., 2025) and Sparse VideoGen (Xi et
al., 2025) keep or skip attention by 3D tiles instead — neighbouring tokens in time and space, which is where video
attention's mass sits. A tile is a block once the tokens are put in tile order (tile by tile, in raster order of the
tile grid; raster order within a tile): :func:`tile_order` is that permutation, and :func:`tiled_attention` runs the
block-sparse kernel (:mod:`diffprobe.attention.kernels`) on q, k, v in tile order with blocks of t·h·w tokens and
puts the output back in the model's order. The grid's sides must be multiples of the tile's (the token count of
every block is then the same; the papers pad the grid otherwise).

:func:`tile_reference` is the same attention in float64 with a dense token mask built from each token's tile: the
check of the permutation and the kernel together. :func:`window_tile_mask` is Sliding Tile Attention's pattern (each
query tile keeps the key tiles within a window of tiles around it).
"""

from __future__ import annotations

import math

import torch

from diffprobe.errors import DiffprobeError

Grid = tuple[int, int, int]


def parse_tile(text: str, flag: str = "--tiles") -> Grid:
    """``"TxHxW"`` (e.g. ``2x8x8``) as a tile shape of positive sides; one clear error line otherwise."""
    parts = str(text).lower().split("x")
    try:
        tile = tuple(int(p) for p in parts)
    except ValueError:
        tile = ()
    if len(tile) != 3 or min(tile) < 1:
        raise DiffprobeError(f"{flag}: {text!r} is not a tile shape; give frames x height x width in latent tokens, "
                             "e.g. 2x8x8")
    return tile  # type: ignore[return-value]


def check_tiles(grid: Grid, tile: Grid) -> None:
    """Refuse a tile that does not divide the grid (one line naming the sides)."""
    if len(grid) != 3 or len(tile) != 3 or min(grid) < 1 or min(tile) < 1:
        raise DiffprobeError(f"a 3D tile needs a grid and a tile of three positive sides, got {grid} and {tile}")
    bad = [f"{name} {g} by {t}" for name, g, t in zip(("frames", "height", "width"), grid, tile, strict=True) if g % t]
    if bad:
        raise DiffprobeError(f"tile {'x'.join(map(str, tile))} does not divide the latent grid "
                             f"{'x'.join(map(str, grid))} ({', '.join(bad)})")


def tile_order(grid: Grid, tile: Grid) -> torch.Tensor:
    """The permutation to tile order: position i of the tiled sequence holds token ``tile_order(...)[i]`` of the
    model's (frame-major, row-major) sequence."""
    check_tiles(grid, tile)
    (gt, gh, gw), (t, h, w) = grid, tile
    index = torch.arange(gt * gh * gw).view(gt // t, t, gh // h, h, gw // w, w)
    return index.permute(0, 2, 4, 1, 3, 5).reshape(-1)


def inverse_order(order: torch.Tensor) -> torch.Tensor:
    """The permutation back from tile order to the model's (``x[:, :, order][:, :, inverse_order(order)] == x``)."""
    back = torch.empty_like(order)
    back[order] = torch.arange(order.numel(), device=order.device)
    return back


def tile_of_token(grid: Grid, tile: Grid) -> torch.Tensor:
    """Each token's tile (its index in the tile grid's raster order), in the model's order."""
    check_tiles(grid, tile)
    (gt, gh, gw), (t, h, w) = grid, tile
    ft = torch.arange(gt) // t
    fh = torch.arange(gh) // h
    fw = torch.arange(gw) // w
    return ((ft.view(-1, 1, 1) * (gh // h) + fh.view(1, -1, 1)) * (gw // w) + fw.view(1, 1, -1)).reshape(-1)


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tile_mask: torch.Tensor, grid: Grid,
                    tile: Grid, *, backend: str = "auto", order: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of q, k, v (B, H, N, d) over the kept (query tile x key tile) pairs of ``tile_mask`` (B, H, tiles,
    tiles; batch and heads may be 1), N = the grid's tokens, in the model's order; ``order``: :func:`tile_order`,
    when the caller has it."""
    from diffprobe.attention.kernels import block_sparse_attention

    n = math.prod(grid)
    if q.shape[2] != n or k.shape[2] != n:
        raise DiffprobeError(f"tiled attention over a {'x'.join(map(str, grid))} grid needs {n} query and key tokens, "
                             f"got {q.shape[2]} and {k.shape[2]}")
    perm = (tile_order(grid, tile) if order is None else order).to(q.device)
    out = block_sparse_attention(q[:, :, perm], k[:, :, perm], v[:, :, perm], tile_mask, math.prod(tile),
                                 backend=backend)
    return out[:, :, inverse_order(perm)]


def tile_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tile_mask: torch.Tensor, grid: Grid,
                   tile: Grid) -> torch.Tensor:
    """:func:`tiled_attention` in float64 with a dense token mask (token i sees token j where their tiles' pair is
    kept), computed without any permutation; a query whose tile keeps no key tile outputs zeros."""
    b, h, n, d = q.shape
    of = tile_of_token(grid, tile).to(q.device)
    mask = tile_mask.expand(b, h, -1, -1)[:, :, of][:, :, :, of]
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(d)
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return p @ v.double()


def window_tile_mask(grid: Grid, tile: Grid, window: Grid) -> torch.Tensor:
    """Sliding Tile Attention's mask (1, 1, tiles, tiles): a query tile keeps the key tiles at most ``window`` tiles
    away along each axis (frames, height, width)."""
    check_tiles(grid, tile)
    sides = [g // t for g, t in zip(grid, tile, strict=True)]
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in sides), indexing="ij"), -1).reshape(-1, 3)
    near = ((coords[:, None, :] - coords[None, :, :]).abs() <= torch.tensor(window)).all(-1)
    return near.view(1, 1, *near.shape)
