"""The calibrated performance model: interpolation and roofline bounds on synthetic curves with hand-derived
answers, the calibration's round trip through a preset file, a tiny run predicted within a loose bound of its
measurement, bad calibrations refused and another machine's flagged."""

import copy
import dataclasses
import math

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
        # M = 1e5, outside the grid: the edge's 4e9 (the preset's peak, 3e9, measured below it, is no ceiling for it)
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
    want = [2e6 / 2e9, 2e9 / 4e9, 1e-2, 1e-5, 1e-6, 1e-2, 2e-7, 4e6 / 2e9]
    assert got == pytest.approx(want, rel=1e-9)
    # a preset whose bandwidth was measured below a memory curve's rate: the curve's rate is the bound
    slow = dataclasses.replace(_preset(), memory_bandwidth=1e9)
    assert predict_seconds(ops, slow)["predicted_s"].tolist() == pytest.approx(want, rel=1e-9)


def test_a_memory_curve_never_prices_fewer_bytes_slower():
    """A small size measured slow (8 ms for 4 kB: a thread pool woken late) is held to the larger sizes' time."""
    cal = copy.deepcopy(_preset().calibration)
    cal["memory"]["norm"] = [[4096, 4096 / 8e-3], [65536, 65536 / 1e-5], [1048576, 1048576 / 1e-4]]
    ops = pd.DataFrame([_op("aten.group_norm.default", 1, 4096, [[1]], [[1]]),
                        _op("aten.group_norm.default", 1, 2 ** 20, [[1]], [[1]])])
    # 4 kB: held to 64 kB's 1e-5 s; 1 MiB: its 1e-4 s (faster than the preset's bandwidth, 2^20 / 1e10 s, which was
    # measured below this curve's rate and so bounds nothing)
    assert predict_seconds(ops, _preset(cal))["predicted_s"].tolist() == pytest.approx([1e-5, 1e-4])


def test_an_output_beyond_the_fresh_pages_size_is_priced_by_its_own_curves():
    """Outputs beyond ``fresh_pages_bytes`` (new pages every call on the CPU) take ``memory_fresh``; smaller ones and
    in-place ops the usual curves; below the fresh curve's smallest size, its bandwidth (not its fixed time)."""
    cal = copy.deepcopy(_preset().calibration)
    cal["meta"]["fresh_pages_bytes"] = 1e7
    cal["memory_fresh"] = {c: [[1e8, 1e9], [1e9, 2e9]] for c in ("elementwise", "softmax", "norm", "copy")}

    def op(name, read, written):
        return {**_op(name, 1, 0, [[1]], [[1]]), "bytes_read": read, "bytes_written": written}

    ops = pd.DataFrame([op("aten.add.Tensor", 5e7, 5e7),  # 1e8 moved, fresh: 1e8 / 1e9
                        op("aten.silu.default", 2e8, 2e8),  # 4e8 moved, log-linear between 0.1 s and 0.5 s
                        op("aten.add.Tensor", 2e7, 3e7),  # 5e7 moved, fresh, under the smallest: 5e7 / 1e9
                        op("aten.add_.Tensor", 5e7, 5e7),  # in place: no new output; above the usual curve: 1e8/1e10
                        op("aten.add.Tensor", 5e6, 5e6)])  # under the size: the usual curve, 1e7 / 1e10
    got = predict_seconds(ops, _preset(cal))["predicted_s"].tolist()
    assert got == pytest.approx([0.1, 10 ** (0.6020599913 * math.log10(5) - 1), 0.05, 1e-2, 1e-3], rel=1e-6)
    cal["meta"]["fresh_pages_bytes"] = -1
    with pytest.raises(DiffprobeError, match="fresh_pages_bytes must be a positive number"):
        _preset(cal)
    cal["meta"]["fresh_pages_bytes"] = 1e7
    cal["memory_fresh"]["norm"] = [[1, -1]]
    with pytest.raises(DiffprobeError, match=r"calibration\.memory_fresh\.norm: needs"):
        _preset(cal)


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


def test_overhead_per_record_by_stage_and_denoiser_component():
    """Each record carries its stage's fitted overhead; a denoiser record its component's where one was fitted (by
    the first name of its module path), the stage's otherwise; a stage never fitted takes the denoiser's."""
    from diffprobe.analyses.predict import overhead_per_record

    ops = pd.DataFrame({"stage": ["denoiser", "denoiser", "denoiser", "text_encoder", "vae_decoder", "denoiser"],
                        "module": ["unet.down_blocks.0", "transformer.blocks.3", "transformer_2.blocks.0",
                                   "text_encoder.layers.0", "vae.decoder", None]})
    cal = {"overhead_s": {"denoiser": 1e-5, "text_encoder": 2e-5},
           "denoiser_overhead_s": {"unet": 3e-5, "transformer": 4e-5}}
    assert overhead_per_record(ops, cal).tolist() == [3e-5, 4e-5, 1e-5, 2e-5, 1e-5, 1e-5]
    assert overhead_per_record(ops, {"overhead_s": cal["overhead_s"]}).tolist() == [1e-5, 1e-5, 1e-5, 2e-5, 1e-5,
                                                                                      1e-5]
    assert overhead_per_record(ops, {}).tolist() == [0.0] * 6


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.pop("sdpa"), "calibration is missing 'sdpa'"),
    (lambda c: c["gemm"].update(m=[1000, 10]), "calibration.gemm: needs increasing axes"),
    (lambda c: c["conv"]["k3"].update(flops_per_s=[[[-1.0] * 2] * 2] * 2), "calibration.conv.k3"),
    (lambda c: c["memory"].update(norm=[[1, 2, 3]]), "calibration.memory.norm"),
    (lambda c: c["meta"].pop("torch"), "calibration.meta is missing 'torch'"),
    (lambda c: c.update(view_s=0), "view_s must be a positive number"),
    (lambda c: c["meta"].update(reference_flops_per_s="fast"), "meta.reference_flops_per_s must be a positive"),
    (lambda c: c.update(denoiser_overhead_s={"transformer": -1.0}), "denoiser_overhead_s must be a table of"),
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
    its analytic records priced by the calibrated model against its untraced measured run, within a factor of four
    where the roofline is a hundred times off (the tight targets live in benchmarks/predict.py). Four, not three: a
    shared 2-core VM runs tiny's denoiser at 81-138 ms (medians of 5) from one call to the next, seconds apart, and
    the fitted overhead is the residual of that measurement (about half of it), which doubles its spread: 25 tries
    here gave 0.58-2.55, one CI run 0.31 under a three-fold bound."""
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
    table["overhead_s"] = fit_overhead(table, base)  # the median of 5 runs, as calibrate fits it
    assert table["overhead_s"]["denoiser"] > 0
    path = tmp_path / "cal.toml"
    path.write_text(to_toml({**base, "name": "cal", "calibration": table}))
    run = ["--model", "tiny-pixart", "--steps", "4", "-q", "--format", "json"]
    assert main(["profile", *run, "--mode", "analytic", "--hardware", str(path), "--out", str(tmp_path / "a")]) == 0
    roof = json.loads(capsys.readouterr().out)["roofline"]
    assert len(table["meta"]["reference_probes"]) == 4  # before, between the curves, after
    faster = tmp_path / "faster.toml"  # as if calibrated when the machine ran four times as fast
    faster.write_text(to_toml({**base, "name": "cal", "calibration": {
        **table, "meta": {**table["meta"], "reference_flops_per_s": 4 * table["meta"]["reference_flops_per_s"]}}}))
    assert main(["profile", *run, "--sample-steps", "0", "--no-trace", "--repeat", "5", "--hardware", str(faster),
                 "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    measured = doc["stages"]
    speed = doc["machine_speed"]  # the reference timed before and after this run (untraced: no records needed)
    assert len(speed["run_flops_per_s"]) == 2 and speed["ratio"] == pytest.approx(
        sum(speed["run_flops_per_s"]) / 2 / (4 * table["meta"]["reference_flops_per_s"]))
    assert 0.1 < speed["ratio"] < 0.5 and speed["note"] in doc["warnings"] and "reference GEMM" in out.err
    predicted = roof["calibrated"]["by_stage"]
    assert 1 / 4 < predicted["denoiser"] / measured["denoiser"] < 4.0, (predicted, measured)
    assert roof["prediction"]["by_stage"]["denoiser"] / measured["denoiser"] < 0.1  # the bound, far below
    assert predicted["denoiser"] > roof["prediction"]["by_stage"]["denoiser"]  # above the bound
    assert "caveat" not in roof["calibrated"]  # calibrated here, now
    levels = roof["calibrated"]["by_stage_level"]["denoiser"]
    assert sum(levels.values()) == pytest.approx(predicted["denoiser"]) and len(levels) > 1


def test_weights_are_read_cold_from_copies_beyond_the_cache(tmp_path):
    """The calibration's weights cycle through copies that together hold the pool (twice the last-level cache, read
    from sysfs as the largest of the cache levels' sizes)."""
    import torch

    from diffprobe.hardware.calibrate import cold, last_level_cache_bytes

    for index, size in (("index0", "48K"), ("index2", "1024K"), ("index3", "32768K"), ("index4", "garbled")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert last_level_cache_bytes("cpu", tmp_path) == 32 * 2 ** 20
    assert last_level_cache_bytes("cpu", tmp_path / "missing") == 32 * 2 ** 20  # unreadable: the default
    (tmp_path / "index5").mkdir()
    (tmp_path / "index5" / "size").write_text("2M")
    (tmp_path / "index3" / "size").write_text("1M")
    assert last_level_cache_bytes("cpu", tmp_path) == 2 * 2 ** 20
    nxt = cold((64, 32), torch.float32, "cpu", pool_bytes=64 * 32 * 4 * 5 + 1)  # five copies are one byte short
    first = [nxt() for _ in range(6)]
    assert len({t.data_ptr() for t in first}) == 6 and first[0].shape == (64, 32)
    assert all(torch.equal(t, first[0]) for t in first)  # the same values: only where they live differs
    assert [nxt().data_ptr() for _ in range(6)] == [t.data_ptr() for t in first]  # then round again
    one = cold((8,), torch.float32, "cpu", pool_bytes=0)
    assert one().data_ptr() == one().data_ptr()


def test_the_overhead_fits_run_where_the_curves_were_measured(monkeypatch):
    """A calibration on another device or dtype fits its cost between operators there too: every fit run (tiny and
    the tiny DiTs, analytic and measured) is configured with the calibration's device and dtype."""
    import diffprobe.run.calibration as calibration

    seen = []

    class Stop(Exception):
        pass

    def run_profile(cfg):
        seen.append((cfg.model, cfg.mode, cfg.device, cfg.dtype))
        raise Stop

    monkeypatch.setattr(calibration, "run_profile", run_profile)
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: copy.deepcopy(_preset().calibration))
    def no_kernel(*a, **k):
        raise RuntimeError("no kernel here")  # left out with a note; the fits still run

    monkeypatch.setattr(calibration, "kernel_curve", no_kernel)
    with pytest.raises(Stop):
        calibration.calibrate_machine("quick", "float16", "cuda:0", _preset().to_dict())
    with pytest.raises(Stop):
        calibration.fit_transformer_overhead(_preset().calibration, _preset().to_dict(),
                                             on={"device": "cuda:0", "dtype": "bfloat16"})
    assert seen == [("tiny", "analytic", "cuda:0", "float16"), ("tiny-sd3", "analytic", "cuda:0", "bfloat16")]
