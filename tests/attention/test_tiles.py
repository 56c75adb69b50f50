"""3D tiles: the permutation to tile order against a hand-built one, tiled block-sparse attention against a float64
reference built from each token's tile (no permutation), Sliding Tile Attention's window mask by hand, and bad
tiles refused."""

import pytest
import torch

from diffprobe.attention.tiles import (
    parse_tile,
    tile_of_token,
    tile_order,
    tile_reference,
    tiled_attention,
    window_tile_mask,
)
from diffprobe.errors import DiffprobeError


def test_tile_order_lists_each_box_of_tokens_in_turn():
    # grid 2 frames x 2 rows x 4 columns, tiles 1 x 2 x 2: tile (f, 0, c) holds rows 0-1, columns 2c, 2c+1 of frame f
    order = tile_order((2, 2, 4), (1, 2, 2)).tolist()
    def token(f, r, c):
        return f * 8 + r * 4 + c
    hand = [token(f, r, 2 * tc + c) for f in range(2) for tc in range(2) for r in range(2) for c in range(2)]
    assert order == hand
    assert tile_of_token((2, 2, 4), (1, 2, 2)).tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]


@pytest.mark.parametrize("backend", ["gather", "auto"])
def test_tiled_attention_equals_the_float64_reference(backend):
    torch.manual_seed(0)
    grid, tile = (4, 4, 8), (2, 2, 4)  # 128 tokens in 8 tiles of 16
    q, k, v = (torch.randn(1, 2, 128, 16) for _ in range(3))
    mask = torch.rand(1, 2, 8, 8) < 0.4
    mask[0, 0, 3] = False  # a query tile that keeps nothing outputs zeros
    out = tiled_attention(q, k, v, mask, grid, tile, backend=backend)
    ref = tile_reference(q, k, v, mask, grid, tile)
    assert (out.double() - ref).abs().max() < 1e-5
    assert out[0, 0, tile_of_token(grid, tile) == 3].abs().max() == 0
    # every tile kept: dense attention
    full = tiled_attention(q, k, v, torch.ones(1, 1, 8, 8, dtype=torch.bool), grid, tile, backend=backend)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (full - dense).abs().max() < 1e-5


def test_window_mask_keeps_the_neighbouring_tiles():
    # a 1 x 3 x 3 grid of tiles; window (0, 1, 0): the tile itself and the ones above and below it
    m = window_tile_mask((1, 6, 6), (1, 2, 2), (0, 1, 0))[0, 0]
    assert m.shape == (9, 9)
    centre = 4  # tile (0, 1, 1)
    assert m[centre].nonzero().flatten().tolist() == [1, 4, 7]
    assert m[0].nonzero().flatten().tolist() == [0, 3]
    assert m.sum() == 3 * (2 + 3 + 2)


def test_bad_tiles_are_refused_in_one_line():
    with pytest.raises(DiffprobeError, match="does not divide the latent grid 3x4x4 \\(frames 3 by 2\\)"):
        tile_order((3, 4, 4), (2, 2, 2))
    with pytest.raises(DiffprobeError, match="not a tile shape"):
        parse_tile("2x8")
    assert parse_tile("2x8x8") == (2, 8, 8)


def test_the_block_method_on_3d_tiles_predicts_and_runs_in_tile_order():
    """ApproxAttention's block method with a tile: its mask is the predictor's over tile-ordered q and k (blocks of
    one tile), its output the float64 attention over those tiles in the model's order; a call that is not the
    video's self-attention (other token counts, text keys) keeps runs of the tile's volume."""
    from diffprobe.attention.approx import ApproxAttention, predict_block_index
    from diffprobe.attention.core import CallInfo

    torch.manual_seed(1)
    grid, tile = (2, 8, 8), (1, 4, 4)  # 128 tokens, 8 tiles of 16
    q, k, v = (torch.randn(1, 2, 128, 16) for _ in range(3))
    core = ApproxAttention("block", 0.6, tile=tile, grid=grid, backend="gather")
    out = core.core(q, k, v, None, CallInfo("blocks.0.attn1", "self", 128, 128, 2, step=0))
    perm = tile_order(grid, tile)
    mask, _, _, kept = predict_block_index(q[:, :, perm], k[:, :, perm], 0.6, 16)
    assert not mask.all()  # the prediction skips some tiles
    assert (out.double() - tile_reference(q, k, v, mask, grid, tile)).abs().max() < 1e-5
    call = core.calls[0]
    assert call["kernel"] == "gather (3D tiles)" and call["kept"] == int(kept)
    # joint attention (text keys in the sequence): runs of 16 tokens, not tiles
    core.core(q, k, v, None, CallInfo("blocks.0.attn", "joint", 128, 128, 2, step=0, text_keys=slice(0, 16)))
    assert "3D tiles" not in core.calls[1]["kernel"]


def test_approx_with_tiles_on_a_video_model(tmp_path, capsys):
    from diffprobe.cli import main

    out = tmp_path / "a"
    # 64 px x 9 frames: a 3 x 4 x 4 token grid, three 1 x 4 x 4 tiles
    assert main(["approx", "--model", "tiny-wan", "--method", "block", "--tau", "0.5", "--tile", "1x4x4", "--steps",
                 "2", "--no-save-masks", "--out", str(out), "--quiet"]) == 0
    import json

    d = json.loads((out / "approx.json").read_text())
    assert d["tile"] == [1, 4, 4] and d["frames"] == 9 and d["block"] == 16
    row = d["results"][1]
    assert "3D tiles" in row["kernel"] and 0 < row["attention_share_saved"] < 1
    capsys.readouterr()
    # a tile that does not divide the grid (3 latent frames by 2), an image model: one line each
    for argv, needle in ((["--model", "tiny-wan", "--tile", "2x4x4"], "does not divide"),
                         (["--model", "tiny", "--tile", "1x4x4"], "applies to video models")):
        assert main(["approx", "--method", "block", "--steps", "2", "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


def test_the_sparsity_probe_counts_key_blocks_by_3d_tile():
    """Attention that stays inside each token's own 3D tile (q = k = the one-hot of the token's tile, scaled: all of
    a row's mass on its tile's tokens): over tiles, one key block of the 8 covers a query block's mass (1/8); over
    runs of the same 16 tokens of the model's order, a run holds rows of two tiles (a 4-wide tile in an 8-wide
    grid: a run is two rows, each from two tiles), so every query block needs 2 key blocks (2/8)."""
    from diffprobe.attention.core import CallInfo
    from diffprobe.attention.probe import SparsityConfig, SparsityProbe

    grid, tile = (2, 8, 8), (1, 4, 4)  # 128 tokens, 8 tiles of 16
    onehot = torch.nn.functional.one_hot(tile_of_token(grid, tile), 8).float() * 30.0  # (128, 8)
    q = k = onehot.view(1, 1, 128, 8)
    v = torch.randn(1, 1, 128, 8)
    probe = SparsityProbe(SparsityConfig(eps=(1e-3,), taus=(0.95,), blocks=(16,), tiles=(tile,)), grid)
    out = probe.core(q, k, v, None, CallInfo("blocks.0.attn1", "self", 128, 128, 1, step=0))
    assert torch.allclose(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))  # dense output
    row = probe.rows[0]
    assert row["tiles_1x4x4_0.95"] == pytest.approx(1 / 8)
    assert row["blocks_16_0.95"] == pytest.approx(2 / 8)
    assert row["empty_tiles_1x4x4_0.001"] == pytest.approx(7 / 8)  # the other 7 key tiles hold nothing
    # a cross-attention call (other key count) gets no tile columns
    probe.core(q, k[:, :, :16], v[:, :, :16], None, CallInfo("blocks.0.attn2", "cross", 128, 16, 1, step=0))
    assert "tiles_1x4x4_0.95" not in probe.rows[-1]


def test_sparsity_with_tiles_on_tiny_wan_and_its_refusals(tmp_path, capsys):
    import json

    from diffprobe.cli import main

    out = tmp_path / "s"
    assert main(["sparsity", "--model", "tiny-wan", "--resolutions", "64", "--steps", "2", "--tiles", "1x4x4,3x2x2",
                 "--blocks", "16", "--no-save-masks", "--out", str(out), "--quiet"]) == 0
    d = json.loads((out / "sparsity.json").read_text())
    assert d["tiles"] == ["1x4x4", "3x2x2"]
    kinds = d["summary"]["64x64"]["by_kind"]
    assert 0 < kinds["self"]["tiles_3x2x2_0.95"] <= 1
    assert kinds["cross"]["tiles_1x4x4_0.95"] is None  # cross-attention's keys are the caption: no tiles
    assert any("by block shape" in line for line in d["findings"])
    capsys.readouterr()
    for argv, needle in ((["--model", "tiny-wan", "--tiles", "2x4x4"], "does not divide"),
                         (["--model", "tiny", "--tiles", "1x4x4"], "applies to video models"),
                         (["--model", "tiny-wan", "--tiles", "2x4"], "not a tile shape")):
        assert main(["sparsity", "--steps", "1", "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
