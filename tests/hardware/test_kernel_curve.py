"""The block-sparse kernel's calibration by density: its prediction on a synthetic curve by hand, a small curve
measured here round-tripped through a preset file and `kernels bench --hardware` predicting its own measurement
within a loose bound, and presets that cannot predict it refused with one line."""

import copy
import json
import math

import pytest

from diffprobe.analyses.predict import attention_seconds
from diffprobe.errors import DiffprobeError
from diffprobe.hardware.preset import from_dict, to_toml
from tests.hardware.test_predict import _preset


def _curve(rates):
    return {"tokens": [1024, 4096], "d": [64], "density": [0.25, 1.0], "flops_per_s": rates, "backend": "cpp",
            "block_size": 64, "heads": 4}


def test_kernel_seconds_by_hand():
    """Log-linear in tokens, head dim and density: at 2048 tokens (halfway between 1024 and 4096 in log space) and
    density 0.5 (halfway between 0.25 and 1), the rate is the geometric mean of the four corners."""
    cal = copy.deepcopy(_preset().calibration)
    cal["block_sparse"] = _curve([[[1e9, 4e9]], [[2e9, 8e9]]])
    rate = math.sqrt(math.sqrt(1e9 * 4e9) * math.sqrt(2e9 * 8e9))  # 2.83e9
    kept = 4.0 * 8 * 2048 * 2048 * 64 * 0.5  # batch x heads 8
    assert attention_seconds(cal, 2048, 2048, 64, 8, 0.5) == pytest.approx(kept / rate)
    # outside the grid: the nearest edge's rate (density 0.1 -> 0.25's; 8192 tokens -> 4096's)
    assert attention_seconds(cal, 8192, 8192, 64, 1, 0.1) == pytest.approx(4.0 * 8192 ** 2 * 64 * 0.1 / 2e9)
    # dense: the sdpa curve (1e9 FLOP/s everywhere in the synthetic preset)
    assert attention_seconds(cal, 2048, 2048, 64, 8) == pytest.approx(4.0 * 8 * 2048 ** 2 * 64 / 1e9)


@pytest.mark.parametrize("change, words", [
    (lambda c: c["block_sparse"].update(density=[1.0, 0.25]), "block_sparse: needs increasing axes"),
    (lambda c: c["block_sparse"].update(flops_per_s=[[[1e9, -1.0]], [[2e9, 8e9]]]), "block_sparse: needs"),
    (lambda c: c["block_sparse"].update(density=[0.25, 2.0]), "block_sparse.density must be in (0, 1]"),
])
def test_bad_kernel_curves_are_refused(change, words):
    cal = copy.deepcopy(_preset().calibration)
    cal["block_sparse"] = _curve([[[1e9, 4e9]], [[2e9, 8e9]]])
    change(cal)
    with pytest.raises(DiffprobeError, match="calibration") as e:
        from_dict({**_preset().to_dict(), "calibration": cal}, "test")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_small_kernel_curve_round_trips_and_predicts_the_bench(tmp_path, capsys, monkeypatch):
    """A small block-sparse curve measured here (with the rest of a synthetic calibration) written to a preset,
    read back, and `kernels bench --hardware` at a point inside it: the prediction within a factor of three of
    the kernel's measured seconds (the tight comparison lives in benchmarks/predict.py)."""
    import diffprobe.hardware.calibrate as cal_mod
    from diffprobe.attention.bench import kernel_curve
    from diffprobe.cli import main

    monkeypatch.setattr(cal_mod, "MIN_RUN_S", 0.002)
    curve = kernel_curve({"tokens": [256, 512], "d": [32], "density": [0.25, 1.0]}, repeats=3)
    rates = [r for plane in curve["flops_per_s"] for row in plane for r in row]
    assert len(rates) == 4 and all(r > 0 for r in rates) and curve["backend"] in ("cpp", "flex", "gather")
    base = _preset().to_dict()
    cal = {**copy.deepcopy(base["calibration"]), "block_sparse": curve}
    cal["meta"] = {**cal["meta"], **_here()}
    path = tmp_path / "k.toml"
    path.write_text(to_toml({**base, "calibration": cal}))
    assert main(["kernels", "bench", "--tokens", "384", "--density", "0.5", "--head-dim", "32", "--heads", "4",
                 "--check-heads", "0", "--repeats", "3", "--hardware", str(path), "--format", "json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    p = r["predicted"]
    assert 1 / 3 < p["kernel_s"] / r["kernel_s"] < 3, (p, r["kernel_s"])
    assert p["kernel_error"] == pytest.approx(p["kernel_s"] / r["kernel_s"] - 1)
    assert p["dense_s"] == pytest.approx(4.0 * 4 * 384 ** 2 * 32 / 1e9)  # the synthetic sdpa curve: 1e9 FLOP/s
    assert "caveat" not in p  # calibrated here, now
    assert main(["kernels", "bench", "--tokens", "384", "--density", "0.5", "--head-dim", "32", "--heads", "4",
                 "--check-heads", "0", "--repeats", "1", "--hardware", str(path), "-q"]) == 0
    text = capsys.readouterr().out
    assert "predicted by t (" in text and "kernel curve): kernel_s" in text
    # another kernel than the curve's (the eager gather path): priced, and said to be another kernel's curve
    assert main(["kernels", "bench", "--tokens", "256", "--density", "0.5", "--head-dim", "32", "--heads", "2",
                 "--check-heads", "0", "--repeats", "1", "--backend", "gather", "--hardware", str(path), "--format",
                 "json", "-q"]) == 0
    other = json.loads(capsys.readouterr().out)["predicted"]
    if curve["backend"] != "gather":
        assert f"the curve is the {curve['backend']} kernel's; this bench ran gather" in other["caveat"]


def _here() -> dict:
    import torch

    from diffprobe.hardware.environment import cpu_name

    return {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def test_kernels_bench_refuses_a_preset_that_cannot_predict_it(tmp_path, capsys):
    """No calibration, or one without the kernel's curve, or another dtype: one line on stderr, exit 2, before
    anything is timed."""
    from diffprobe.cli import main

    plain = tmp_path / "plain.toml"
    plain.write_text(to_toml({k: v for k, v in _preset().to_dict().items() if k != "calibration"}))
    no_curve = tmp_path / "nocurve.toml"
    no_curve.write_text(to_toml(_preset().to_dict()))
    cal = {**copy.deepcopy(_preset().calibration), "block_sparse": _curve([[[1e9, 4e9]], [[2e9, 8e9]]])}
    other = tmp_path / "bf16.toml"
    other.write_text(to_toml({**_preset().to_dict(), "calibration": {**cal, "meta": {**cal["meta"],
                                                                                       "dtype": "bfloat16"}}}))
    for path, words in ((plain, "has no calibration"), (no_curve, "no block-sparse kernel curve"),
                        (other, "calibrated in bfloat16")):
        assert main(["kernels", "bench", "--tokens", "256", "--hardware", str(path), "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err


def test_the_kernel_and_index_grids_retime_their_dips():
    """A point timed at a quarter of its neighbours' rate (a shared machine's slow second) is timed again once the
    grid is done and keeps the higher rate; the others are timed once; progress counts the grid once."""
    from diffprobe.attention.bench import _timed_grid

    times: dict = {}

    def rate(n, d, x):
        times[n, d, x] = times.get((n, d, x), 0) + 1
        return 1e9 / 4 if (n, d, x) == (2, 20, 0.5) and times[n, d, x] == 1 else 1e9

    seen = []
    grid = {"tokens": [1, 2, 3], "d": [10, 20, 30], "density": [0.25, 0.5, 1.0]}
    curve = _timed_grid(grid, ("tokens", "d", "density"), rate, "k", "cpu", lambda *a: seen.append(a))
    assert curve["retimed"] == [[1, 1, 1]] and times[2, 20, 0.5] == 2
    assert curve["flops_per_s"] == [[[1e9] * 3] * 3] * 3
    assert sum(times.values()) == 28 and seen[-1] == ("k", 27, 27) and len(seen) == 27
    assert curve["axes"] == ["tokens", "d", "density"] and curve["density"] == [0.25, 0.5, 1.0]
