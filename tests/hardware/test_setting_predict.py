"""A setting's denoiser seconds predicted (``profile --approx ... --hardware PRESET``): the block method's attention
calls re-priced on the block-sparse kernel's curve at their kept density plus their index's curve, by hand on
synthetic curves; the calls the method left dense, reused an index in or ran as a masked reference; the index curve
measured here and round-tripped through a preset; a tiny run through the command line."""

import copy
import json
import math

import pandas as pd
import pytest

from diffprobe.analyses.predict_setting import setting_seconds
from diffprobe.errors import DiffprobeError
from diffprobe.hardware.preset import from_dict, to_toml
from tests.hardware.test_predict import _op, _preset

BH, N, D = 2, 100, 10  # batch x heads, tokens (self-attention), head dim
CALL_FLOPS = 4.0 * BH * N * N * D  # the dense call's score + P.V FLOPs; the synthetic sdpa curve runs 1e9 FLOP/s


def _cal(index=True):
    cal = copy.deepcopy(_preset().calibration)
    cal["block_sparse"] = {"tokens": [10, 1000], "d": [10, 1000], "density": [0.1, 1.0], "backend": "cpp",
                           "flops_per_s": [[[5e8, 5e8]] * 2] * 2, "block_size": 64, "heads": 4}
    if index:
        cal["block_index"] = {"tokens": [10, 1000], "d": [10, 1000], "heads": [1, 100],
                              "flops_per_s": [[[1e8, 1e8]] * 2] * 2, "block_size": 64, "tau": 0.5}
    return cal


def _records(steps=1):
    """Per step: one self-attention call of the UNet (score, softmax, P.V) and one linear layer."""
    rows = []
    shapes = [[1, BH, N, D], [1, BH, N, D]]
    for step in range(steps):
        for r in (_op("sdpa", 0.5 * CALL_FLOPS, 0, shapes, [], "score"), _op("sdpa", 1e4, 0, [], [], "softmax"),
                  _op("sdpa", 0.5 * CALL_FLOPS, 0, shapes[:1], [], "pv"),
                  _op("aten.linear.default", 2e6, 10, [[100, 100], [100, 100]], [[100, 100]])):
            r.update(step=step, module="unet.attn1" if r["op"] == "sdpa" else "unet.ff", cfg="",
                     layer_type={"score": "attn_score", "softmax": "attn_softmax", "pv": "attn_pv"}.get(
                         r["part"], "ffn"))
            rows.append(r)
    ops = pd.DataFrame(rows)
    ops["index"] = range(len(ops))
    return ops


def _call(step=0, kernel="cpp", kept=0.25, predictor=1e4, copies=()):
    entries = BH * N * N
    return {"layer": "attn1", "attn_kind": "self", "step": step, "call": 0, "entries": entries,
            "kept": int(kept * entries), "heads": BH, "q_tokens": N, "k_tokens": N, "head_dim": D,
            "dense_flops": CALL_FLOPS, "predictor_flops": int(predictor), "kernel": kernel, "copies": list(copies)}


def test_the_kernels_copies_are_priced_on_the_copy_curve_by_hand():
    """The synthetic copy curve: 1000 bytes moved in 1e-6 s, 1e6 in 1e-4 s (log-linear between, 1e10 B/s above).
    Four copies writing 5e5 bytes each (moving 1e6) cost 4e-4 s; one writing 1e6 (moving 2e6, past the curve) 2e-4 s;
    a call recorded before copies were (no ``copies``) pays none, and a note says so."""
    preset = _preset(_cal())
    ops = _records(steps=2)
    plain = setting_seconds(ops, ops, [_call(0), _call(1)], preset)
    got = setting_seconds(ops, ops, [_call(0, copies=[5e5] * 4), _call(1, copies=[1e6])], preset)
    a = got["attention"]
    assert (a["copies"], a["copies_s"]) == (5, pytest.approx(4e-4 + 2e-4, rel=1e-9))
    assert got["denoiser_s"] - plain["denoiser_s"] == pytest.approx(6e-4, rel=1e-9)
    old = _call(0)
    del old["copies"]
    before = setting_seconds(ops, ops, [old], preset)
    assert before["attention"]["copies_s"] == 0 and "copies of Q, K, V and its output not priced" in before["notes"][0]


def test_a_block_call_is_repriced_on_the_kernel_and_its_index_by_hand():
    """The call's dense price (its FLOPs at the sdpa curve's 1e9 FLOP/s) replaced by the kernel's (kept FLOPs at
    5e8) and its index's (predictor FLOPs at 1e8); the linear layer and the cost between operators unchanged."""
    preset = _preset(_cal())
    ops = _records()
    got = setting_seconds(ops, ops, [_call()], preset)
    kernel, index, dense = 0.25 * CALL_FLOPS / 5e8, 1e4 / 1e8, CALL_FLOPS / 1e9
    a = got["attention"]
    assert (a["dense_s"], a["kernel_s"], a["index_s"]) == pytest.approx((dense, kernel, index), rel=1e-9)
    assert got["denoiser_s"] - got["dense_denoiser_s"] == pytest.approx(kernel + index - dense, rel=1e-9)
    assert (a["kernel_calls"], a["index_calls"], a["dense_calls"], a["unpriced_calls"]) == (1, 1, 0, 0)
    assert got["notes"] == []


def test_calls_left_dense_reusing_an_index_or_masked_are_priced_as_they_ran():
    """Step 0: the mask kept every block (dense SDPA, its index paid); step 1: the kernel on an index predicted at
    step 0 (no index paid); with a masked dense reference nothing is re-priced, and a note says so."""
    preset = _preset(_cal())
    ops = _records(steps=2)
    got = setting_seconds(ops, ops, [_call(0, kernel="dense", kept=1.0), _call(1, predictor=0)], preset)
    a = got["attention"]
    assert (a["kernel_calls"], a["dense_calls"], a["index_calls"]) == (1, 1, 1)
    assert a["index_s"] == pytest.approx(1e4 / 1e8)
    assert got["denoiser_s"] - got["dense_denoiser_s"] == pytest.approx(
        0.25 * CALL_FLOPS / 5e8 + 1e4 / 1e8 - CALL_FLOPS / 1e9, rel=1e-9)
    masked = setting_seconds(ops, ops, [_call(0, kernel="masked-dense"), _call(1, kernel="masked-dense")], preset)
    assert masked["denoiser_s"] == pytest.approx(masked["dense_denoiser_s"])
    assert "2 of 2 attention calls ran the method as a masked dense reference" in masked["notes"][0]


def test_a_calibration_without_the_curves_says_what_it_left_out():
    preset = _preset(_cal(index=False))
    ops = _records()
    got = setting_seconds(ops, ops, [_call(kernel="gather")], preset)
    assert got["attention"]["index_s"] == 0 and got["attention"]["kernel_calls"] == 1
    assert any("no block_index curve" in n for n in got["notes"])
    assert any("the kernel curve is the cpp kernel's; calls here ran gather" in n for n in got["notes"])
    stray = setting_seconds(ops, ops, [_call(), _call(step=5)], _preset(_cal()))  # a call no record shares
    assert stray["attention"]["unpriced_calls"] == 1 and stray["attention"]["kernel_calls"] == 1
    assert "1 of 2 attention calls not priced: no traced records of theirs" in stray["notes"]
    bare = copy.deepcopy(_preset().calibration)
    got = setting_seconds(ops, ops, [_call()], _preset(bare))
    assert got["denoiser_s"] == pytest.approx(got["dense_denoiser_s"])
    assert any("not re-priced (no block-sparse kernel curve" in n for n in got["notes"])


def test_a_bad_index_curve_is_refused():
    cal = _cal()
    cal["block_index"]["heads"] = [100, 1]
    with pytest.raises(DiffprobeError, match=r"calibration\.block_index: needs increasing axes tokens, d, heads"):
        _preset(cal)


def test_the_index_curve_measured_here_round_trips_and_prices_a_tiny_block_run(tmp_path, capsys, monkeypatch):
    """A small index curve and kernel curve measured here, in a preset file read back; `profile --approx block=0.25
    --hardware` on tiny at 256 px (1024 latent tokens at its first level: blocks to skip) predicts the setting's
    denoiser and dense's, each beside its untraced measurement (the tight comparison: benchmarks/predict.py)."""
    import diffprobe.hardware.calibrate as cal_mod
    from diffprobe.attention.bench import index_curve, kernel_curve
    from diffprobe.cli import main
    from tests.hardware.test_kernel_curve import _here

    monkeypatch.setattr(cal_mod, "MIN_RUN_S", 0.002)
    index = index_curve({"tokens": [256, 1024], "d": [32], "heads": [2, 8]}, repeats=3)
    rates = [r for plane in index["flops_per_s"] for row in plane for r in row]
    assert len(rates) == 4 and all(r > 0 and math.isfinite(r) for r in rates)
    cal = {**_cal(), "block_index": index,
           "block_sparse": kernel_curve({"tokens": [256, 1024], "d": [32], "density": [0.25, 1.0]}, repeats=3)}
    cal["meta"] = {**cal["meta"], **_here()}
    path = tmp_path / "p.toml"
    path.write_text(to_toml({**_preset().to_dict(), "calibration": cal}))
    assert from_dict(json.loads(json.dumps({**_preset().to_dict(), "calibration": cal})), "x").calibration[
        "block_index"]["heads"] == [2, 8]
    out = tmp_path / "run"
    assert main(["profile", "--model", "tiny", "--height", "256", "--width", "256", "--steps", "2", "--approx",
                 "block=0.25", "--hardware", str(path), "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "predicted by t: denoiser" in text and "with it vs" in text
    run = json.loads((out / "run.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    p = run["approx"]["predicted"]
    a = p["attention"]
    assert a["kernel_calls"] > 0 and a["index_calls"] > 0 and a["index_s"] > 0
    assert a["kernel_calls"] + a["dense_calls"] + a["unpriced_calls"] == a["calls"]
    vs = p["versus_measured"]
    assert vs["denoiser"]["measured_s"] == run["approx"]["denoiser_seconds"]
    assert vs["dense_denoiser"]["measured_s"] == run["approx"]["dense_untraced_denoiser_seconds"]
    assert vs["denoiser"]["error"] == pytest.approx(p["denoiser_s"] / vs["denoiser"]["measured_s"] - 1)


def test_repeated_runs_alternate_and_count_one_runs_calls(tmp_path, capsys):
    """--repeat 2 --warmup 1: dense and the setting timed in turn, each the median of its 2 runs; the account and the
    prediction count one run's attention calls (before, each repeat's and warm-up's calls were summed: the
    predictor's FLOPs doubled and tripled with the runs)."""
    from diffprobe.cli import main

    path = tmp_path / "p.toml"
    path.write_text(to_toml({**_preset().to_dict(), "calibration": _cal()}))
    runs = {}
    for repeat, warmup in ((1, 0), (2, 1)):
        out = tmp_path / f"r{repeat}"
        assert main(["profile", "--model", "tiny", "--height", "256", "--width", "256", "--steps", "2", "--approx",
                     "block=0.25", "--repeat", str(repeat), "--warmup", str(warmup), "--hardware", str(path),
                     "--out", str(out), "-q"]) == 0
        runs[repeat] = json.loads((out / "run.json").read_text())["approx"]
    capsys.readouterr()
    one, two = runs[1], runs[2]
    assert one["flops_by_layer_type"]["attn_predictor"] > 0
    assert two["flops_by_layer_type"]["attn_predictor"] == one["flops_by_layer_type"]["attn_predictor"]
    assert two["kept_fraction"] == one["kept_fraction"]
    assert two["predicted"]["attention"]["calls"] == one["predicted"]["attention"]["calls"]
    assert two["predicted"]["attention"]["index_s"] == pytest.approx(one["predicted"]["attention"]["index_s"])
    assert two["denoiser_seconds_stats"]["runs"] == two["dense_untraced_denoiser_seconds_stats"]["runs"] == 2
