"""The calibrated performance model: interpolation and roofline bounds on synthetic curves with hand-derived
answers, the calibration's round trip through a preset file, a tiny run predicted within a loose bound of its
measurement, bad calibrations refused and another machine's flagged."""

import copy

import pandas as pd
import pytest

from diffprobe.analyses.predict import op_class, predict_seconds
from diffprobe.errors import DiffprobeError
from diffprobe.hardware.preset import calibration_mismatch, from_dict, load_file, to_toml

META = {"date": "2026-12-05T00:00:00+00:00", "level": "test", "cpu": "Test CPU", "cpu_capability": "AVX2",
        "torch": "2.13.0+cpu", "threads": 2, "device": "cpu", "dtype": "float32", "seconds": 1.0}


def _grid(axes, lo_rate, hi_rate):
    """A 2-point grid per axis (10 and 1000) whose rate is ``lo_rate`` where the first axis is 10, ``hi_rate``
    where it is 1000."""
    return {**{a: [10, 1000] for a in axes}, "flops_per_s": [[[lo_rate] * 2] * 2, [[hi_rate] * 2] * 2]}


def _preset(cal=None):
    cal = cal or {"meta": dict(META), "gemm": _grid(("m", "n", "k"), 1e9, 4e9),
           "conv": {"k3": _grid(("pixels", "cin", "cout"), 2e9, 2e9), "k1": _grid(("pixels", "cin", "cout"), 1e9, 1e9)},
           "sdpa": _grid(("q", "kv", "d"), 1e9, 1e9),
           "memory": {c: [[1000, 1e9], [1e6, 1e10]] for c in ("elementwise", "softmax", "norm", "copy")},
           "view_s": 2e-7}
    return from_dict({"name": "t", "title": "t", "kind": "cpu", "source": "synthetic", "memory_bytes": 1e10,
                      "memory_bandwidth": 1e10, "peak_flops": {"float32": 3e9, "float16": 3e9, "bfloat16": 3e9},
                      "calibration": cal}, "test")


def _op(op, flops, nbytes, shapes, outs, part=""):
    return {"index": 0, "op": op, "part": part, "stage": "denoiser", "layer_type": "ffn", "dtype": "float32",
            "flops": flops, "bytes_read": nbytes, "bytes_written": 0, "bytes_read_unfused": nbytes,
            "bytes_written_unfused": 0, "input_shapes": shapes, "output_shapes": outs}


def test_interpolation_and_roofline_bounds_by_hand():
    ops = pd.DataFrame([
        # M = 100: halfway between 10 and 1000 in log space, so the rate is sqrt(1e9 * 4e9) = 2e9
        _op("aten.linear.default", 2e6, 10, [[100, 100], [100, 100]], [[100, 100]]),
        # M = 1e5, outside the grid: the edge's 4e9, capped by the peak (3e9)
        _op("aten.linear.default", 2e9, 10, [[100000, 100], [100, 100]], [[100000, 100]]),
        # the same GEMM with 1e8 bytes: the bandwidth bound (1e8 / 1e10 = 1e-2 s) wins
        _op("aten.linear.default", 2e6, 1e8, [[100, 100], [100, 100]], [[100, 100]]),
        # memory-bound: t(1e3) = 1e-6, t(1e6) = 1e-4; at 10^4.5 bytes log-linear: 1e-5
        _op("aten.add.Tensor", 100, 10 ** 4.5, [[10]], [[10]]),
        _op("aten.add.Tensor", 1, 10, [[1]], [[1]]),  # below the smallest: that op's time, 1e-6 (its fixed cost)
        _op("aten.add.Tensor", 1, 1e8, [[1]], [[1]]),  # above the largest: its bandwidth, 1e8 / 1e10
        _op("aten.view.default", 0, 0, [[1]], [[1]]),  # moves nothing: the dispatch cost
        # a 3x3 convolution (2e9 FLOP/s everywhere) with output pixels 2 x 8 x 8
        _op("aten.conv2d.default", 4e6, 10, [[2, 16, 8, 8], [16, 16, 3, 3]], [[2, 16, 8, 8]]),
    ])
    got = predict_seconds(ops, _preset())["predicted_s"].tolist()
    want = [2e6 / 2e9, 2e9 / 3e9, 1e-2, 1e-5, 1e-6, 1e-2, 2e-7, 4e6 / 2e9]
    assert got == pytest.approx(want, rel=1e-9)


def test_a_memory_curve_never_prices_fewer_bytes_slower():
    """A small size measured slow (8 ms for 4 kB: a thread pool woken late) is held to the larger sizes' time."""
    cal = copy.deepcopy(_preset().calibration)
    cal["memory"]["norm"] = [[4096, 4096 / 8e-3], [65536, 65536 / 1e-5], [1048576, 1048576 / 1e-4]]
    ops = pd.DataFrame([_op("aten.group_norm.default", 1, 4096, [[1]], [[1]]),
                        _op("aten.group_norm.default", 1, 2 ** 20, [[1]], [[1]])])
    # 4 kB: held to 64 kB's 1e-5 s; 1 MiB: its 1e-4 s, bounded by the preset's bandwidth (2^20 / 1e10 s)
    assert predict_seconds(ops, _preset(cal))["predicted_s"].tolist() == pytest.approx([1e-5, 2 ** 20 / 1e10])


def test_a_fused_attention_call_is_shared_over_its_parts_by_flops():
    shapes = [[1, 2, 100, 10], [1, 2, 100, 10]]
    call_flops = 4.0 * 2 * 100 * 100 * 10  # 1e9 FLOP/s in the whole grid
    call = [_op("sdpa", 6e5, 0, shapes, [], "score"), _op("sdpa", 2e5, 0, [], [], "softmax"),
            _op("sdpa", 2e5, 0, shapes[:1], [], "pv")]
    for i, r in enumerate(call * 2):  # two calls, the records of each numbered one after another (as traced)
        r["index"] = i
    ops = pd.DataFrame([dict(r) for r in call * 2])
    ops["index"] = range(6)
    got = predict_seconds(ops, _preset())["predicted_s"].to_numpy()
    assert got[:3].sum() == pytest.approx(call_flops / 1e9) and got[0] == pytest.approx(0.6 * got[:3].sum())
    assert got[3:].tolist() == pytest.approx(got[:3].tolist())


def test_operator_classes():
    assert [op_class(o, f, b) for o, f, b in [
        ("aten.linear.default", 1, 1), ("aten.bmm.default", 1, 1), ("aten.conv2d.default", 1, 1), ("sdpa", 1, 1),
        ("aten._softmax.default", 1, 1), ("aten.group_norm.default", 1, 1), ("aten.cat.default", 0, 8),
        ("aten.silu.default", 1, 8), ("aten.silu_.default", 1, 8), ("aten.logical_not.default", 1, 8),
        ("aten.add.Tensor", 1, 8), ("aten.transpose.int", 0, 0)]] == [
        "gemm", "gemm", "conv", "sdpa", "softmax", "norm", "copy", "activation", "activation", "elementwise",
        "elementwise", "view"]


def test_calibration_round_trips_through_a_preset_file(tmp_path):
    preset = _preset()
    path = tmp_path / "p.toml"
    path.write_text(to_toml(preset.to_dict()))
    again = load_file(path)
    assert again.calibration == preset.calibration and again.peak_flops == preset.peak_flops


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.pop("sdpa"), "calibration is missing 'sdpa'"),
    (lambda c: c["gemm"].update(m=[1000, 10]), "calibration.gemm: needs increasing axes"),
    (lambda c: c["conv"]["k3"].update(flops_per_s=[[[-1.0] * 2] * 2] * 2), "calibration.conv.k3"),
    (lambda c: c["memory"].update(norm=[[1, 2, 3]]), "calibration.memory.norm"),
    (lambda c: c["meta"].pop("torch"), "calibration.meta is missing 'torch'"),
    (lambda c: c.update(view_s=0), "view_s must be a positive number"),
])
def test_bad_calibrations_are_one_line(change, needle):
    cal = copy.deepcopy(_preset().calibration)
    change(cal)
    with pytest.raises(DiffprobeError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        _preset(cal)


def test_another_machine_is_flagged():
    import torch

    from diffprobe.hardware.environment import cpu_name

    cal = _preset().calibration
    assert "cpu 'Test CPU'" in calibration_mismatch(cal)
    here = dict(cal, meta={**cal["meta"], "cpu": cpu_name(), "threads": torch.get_num_threads(),
                           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": "0.1"})
    line = calibration_mismatch(here)
    assert line.startswith("the calibration was measured with another torch '0.1' (here") and "cpu '" not in line


@pytest.mark.slow
def test_a_tiny_run_is_predicted_within_a_loose_bound(tmp_path, capsys, monkeypatch):
    """A small calibration of this machine (overhead fitted on tiny), then tiny-pixart (another architecture):
    its analytic records priced by the calibrated model against its untraced measured run, within a factor of three
    where the roofline is a hundred times off (the tight targets live in benchmarks/predict.py)."""
    import json

    import diffprobe.hardware.calibrate as cal_mod
    from diffprobe.cli import main
    from diffprobe.hardware.measure import this_cpu
    from diffprobe.run.calibration import fit_overhead

    monkeypatch.setattr(cal_mod, "MIN_RUN_S", 0.002)
    small = {"gemm": {"m": [16, 512], "n": [32, 512], "k": [32, 512]},
             "conv": {"pixels": [64, 4096], "cin": [4, 128], "cout": [4, 128]},
             "sdpa": {"q": [16, 1024], "kv": [16, 1024], "d": [8, 64]},
             "memory_bytes": [2 ** 12, 2 ** 18, 2 ** 24], "flop_cap": 2e8, "repeats": 2}
    base = this_cpu().to_dict()
    table = cal_mod.calibrate("test", grids=small)
    table["overhead_s"] = fit_overhead(table, base, repeat=3)
    assert table["overhead_s"]["denoiser"] > 0
    path = tmp_path / "cal.toml"
    path.write_text(to_toml({**base, "name": "cal", "calibration": table}))
    run = ["--model", "tiny-pixart", "--steps", "2", "-q", "--format", "json"]
    assert main(["profile", *run, "--mode", "analytic", "--hardware", str(path), "--out", str(tmp_path / "a")]) == 0
    roof = json.loads(capsys.readouterr().out)["roofline"]
    assert main(["profile", *run, "--sample-steps", "0", "--no-trace", "--repeat", "3", "--out",
                 str(tmp_path / "m")]) == 0
    measured = json.loads(capsys.readouterr().out)["stages"]
    predicted = roof["calibrated"]["by_stage"]
    assert 1 / 3 < predicted["denoiser"] / measured["denoiser"] < 3.0, (predicted, measured)
    assert roof["prediction"]["by_stage"]["denoiser"] / measured["denoiser"] < 0.1  # the bound, far below
    assert predicted["denoiser"] > roof["prediction"]["by_stage"]["denoiser"]  # above the bound
    assert "caveat" not in roof["calibrated"]  # calibrated here, now
    levels = roof["calibrated"]["by_stage_level"]["denoiser"]
    assert sum(levels.values()) == pytest.approx(predicted["denoiser"]) and len(levels) > 1
