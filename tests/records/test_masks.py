"""The mask store: masks kept by the sparsity statistics on hand-built attention, a round trip through the store,
its size budget, and the accelerator model following a real sparsity run's masks."""

import numpy as np
import pytest
import torch

import diffprobe
from diffprobe.attention.stats import HeadStats
from diffprobe.cli import main
from diffprobe.records.masks import MaskStore, write_masks


def test_kept_blocks_and_keys_on_hand_built_attention():
    # 4 queries x 4 keys in 2-blocks, one head. Query rows 0-1 put 0.7 on key 0 and 0.1 on keys 1-3; rows 2-3 put
    # 0.4 on keys 2 and 3 and 0.1 on keys 0 and 1.
    p = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 2 + [[0.1, 0.1, 0.4, 0.4]] * 2).view(1, 1, 4, 4)
    s = HeadStats(1, 4, eps=(0.01,), taus=(0.75, 0.95), blocks=(2,), keep_masks=True)
    s.add(p)
    blocks, rows = s.masks()
    # block masses per row: query block 0: key block 0 = 0.8, key block 1 = 0.2; query block 1: 0.2 and 0.8.
    # tau 0.75: the heavier block alone covers it; tau 0.95: both blocks are needed.
    assert blocks[(2, 0.75)].tolist() == [[[[True, False], [False, True]]]]
    assert blocks[(2, 0.95)].tolist() == [[[[True, True], [True, True]]]]
    # keys per row: rows 0-1 need 0.7 + 0.1 = 0.8 >= 0.75 (2 keys), 0.95 needs all 4; rows 2-3: 0.4 + 0.4 = 0.8
    # (2 keys) and all 4
    assert rows[0.75].tolist() == [[[2, 2, 2, 2]]] and rows[0.95].tolist() == [[[4, 4, 4, 4]]]


def _entry(i, q=8, k=8, b=4, seed=0):
    g = torch.Generator().manual_seed(seed + i)
    return {"layer": f"l{i}", "step": i, "attn_kind": "self", "q_tokens": q, "k_tokens": k,
            "blocks": {(b, 0.9): torch.rand(2, 3, -(-q // b), -(-k // b), generator=g) > 0.5},
            "rows": {0.9: torch.randint(1, k + 1, (2, 3, q), generator=g, dtype=torch.int32)}}


def test_round_trip_and_budget(tmp_path):
    entries = [_entry(i, q=10, k=21, b=4) for i in range(3)]  # ragged: 3 x 6 blocks, packed along 6 bits
    index = write_masks(tmp_path, entries, (4,), (0.9,))
    store = MaskStore(tmp_path)
    assert not index["truncated"] and len(store.entries) == 3
    for e, src in zip(store.entries, entries, strict=True):
        assert (e["batch"], e["heads"], e["q_tokens"], e["k_tokens"]) == (2, 3, 10, 21)
        assert np.array_equal(store.block_mask(e, 4, 0.9), src["blocks"][(4, 0.9)].numpy())
        assert np.array_equal(store.row_keys(e, 0.9), src["rows"][0.9].numpy())
    assert store.find("l1", 1)["id"] == 1 and store.find("l2", 7)["id"] == 2 and store.find("nope", 0) is None
    # each entry packs 2*3*3 bytes of blocks (6 bits -> 1 byte per row) and 2*3*10 uint16 row counts = 138 bytes:
    # a 300-byte budget holds two entries and says the store was cut
    cut = write_masks(tmp_path / "cut", entries, (4,), (0.9,), budget_bytes=300)
    assert cut["truncated"] and len(cut["entries"]) == 2 and cut["bytes"] == 276


@pytest.fixture(scope="module")
def tiny_masks(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    assert main(["sparsity", "--model", "tiny", "--resolutions", "256", "--steps", "1", "--blocks", "64",
                 "--tau", "0.9", "--out", str(root / "sp"), "-q"]) == 0
    diffprobe.profile(model="tiny", mode="analytic", height=256, width=256, steps=1, out=str(root / "run"))
    return root


@pytest.mark.slow
def test_accel_follows_measured_masks(tiny_masks):
    store = MaskStore(tiny_masks / "sp" / "points" / "256x256")
    r = diffprobe.accel(tiny_masks / "run", "sa-dense,sa-block64,sa-element", masks=tiny_masks / "sp", tau=0.9)
    block = r["accel"]["sa-block64"]
    assert block["skipped_calls"] > 0 and r["masks"]["tau"] == 0.9
    # the store's self-attention entries at the top level (1024 tokens) hold what the block design keeps
    top = [e for e in store.entries if e["attn_kind"] == "self" and e["k_tokens"] == 1024]
    kept = np.mean([store.block_mask(e, 64, 0.9).mean() for e in top])
    assert r["masks"]["block_kept"]["64"] == pytest.approx(
        np.average([store.block_mask(e, 64, 0.9).mean() for e in store.entries if e["attn_kind"] == "self"],
                   weights=[e["batch"] * e["heads"] * e["q_tokens"] * e["k_tokens"] for e in store.entries
                            if e["attn_kind"] == "self"]))
    assert 0 < kept <= 1
    dense = r["accel"]["sa-dense"]
    assert block["by_layer_type"]["conv"] == dense["by_layer_type"]["conv"]


@pytest.mark.slow
def test_masks_bad_input(tiny_masks, tmp_path, capsys):
    def one_line(argv, needle):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err

    run = tiny_masks / "run"
    one_line(["accel", str(run), "--arch", "sa-block64", "--masks", str(tmp_path)], "no mask store")
    one_line(["accel", str(run), "--arch", "sa-block64", "--masks", str(tiny_masks / "sp"), "--tau", "0.5"],
             "not in the mask store")
    one_line(["accel", str(run), "--arch", "sa-block64", "--masks", str(tiny_masks / "sp"), "--density", "0.5"],
             "not both")
    other = tmp_path / "run128"
    diffprobe.profile(model="tiny", mode="analytic", height=128, width=128, steps=1, out=str(other))
    one_line(["accel", str(other), "--arch", "sa-block64", "--masks", str(tiny_masks / "sp")], "no masks at 128x128")
    one_line(["accel", str(other), "--arch", "sa-block64", "--masks", str(tiny_masks / "sp" / "points" / "256x256"),
              "--tau", "0.9"], "tokens")


@pytest.mark.slow
def test_approx_saves_what_each_setting_kept(tmp_path):
    # tiny at 256 px: every setting's store holds, per call, the kept keys per row; summed over the run they give
    # the kept fraction the approx account reports (counted on another path: the kept entries as the method ran)
    import json

    out = tmp_path / "ap"
    assert main(["approx", "--model", "tiny", "--height", "256", "--width", "256", "--steps", "1", "--method",
                 "threshold,block", "--eps", "0.001", "--tau", "0.9", "--out", str(out), "-q"]) == 0
    results = {r["method"]: r for r in json.loads((out / "approx.json").read_text())["results"]}
    for name, method, value in (("threshold_eps_0.001", "threshold", 0.001), ("block_tau_0.9", "block", 0.9)):
        store = MaskStore(out / "masks" / name)
        assert store.index["source"] == "approx" and store.index["method"] == method
        kept = sum(float(store.row_keys(e, value).sum()) for e in store.entries)
        entries = sum(e["batch"] * e["heads"] * e["q_tokens"] * e["k_tokens"] for e in store.entries)
        assert kept / entries == pytest.approx(results[method]["kept_fraction"], rel=1e-9)
        for e in store.entries:
            blocks = store.block_mask(e, 64, value)
            assert blocks.shape == (e["batch"], e["heads"], -(-e["q_tokens"] // 64), -(-e["k_tokens"] // 64))
            assert blocks.any(axis=-1).all()  # every query block keeps something (every row keeps its largest)
            q_len = np.minimum(64, e["q_tokens"] - 64 * np.arange(blocks.shape[2]))
            k_len = np.minimum(64, e["k_tokens"] - 64 * np.arange(blocks.shape[3]))
            tile_entries = float(np.einsum("bhij,i,j->", blocks.astype(float), q_len, k_len))
            rows = float(store.row_keys(e, value).sum())
            if method == "block":  # the block method keeps whole tiles: its rows are exactly the kept tiles
                assert rows == tile_entries
            else:  # an entry-level method keeps entries inside the tiles that hold one: never more
                assert rows <= tile_entries


def test_step_overlap_of_kept_blocks(tmp_path):
    from diffprobe.analyses.sparsity import step_overlap

    # one layer, two heads, steps 0 and 1: head 0 keeps {a, b} then {a} (Jaccard 1/2), head 1 keeps {c} both times
    # (1); a cross-attention entry is ignored
    def entry(step, mask, kind="self"):
        m = torch.tensor(mask, dtype=torch.bool).view(1, 2, 2, 2)
        return {"layer": "l", "step": step, "attn_kind": kind, "q_tokens": 8, "k_tokens": 8,
                "blocks": {(4, 0.9): m}, "rows": {0.9: torch.ones(1, 2, 8, dtype=torch.int32)}}

    entries = [entry(0, [[[1, 1], [0, 0]], [[0, 0], [1, 0]]]), entry(1, [[[1, 0], [0, 0]], [[0, 0], [1, 0]]]),
               entry(1, [[[0, 0], [0, 0]], [[0, 0], [0, 0]]], kind="cross")]
    write_masks(tmp_path, entries, (4,), (0.9,))
    assert step_overlap(MaskStore(tmp_path), (4,), (0.9,)) == {"4_0.9": pytest.approx(0.75)}
