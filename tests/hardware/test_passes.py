"""A calibration in several passes through its grids: each rate the median over the passes (hand-made tables), the
passes and their probes in a real small calibration, and a bad --passes refused in one line."""

import pytest

from diffprobe.hardware.passes import median_of_passes


def _table(gemm, k3, k1, sdpa, memory, view, retimed):
    def curve(rates, axes):
        return {"axes": axes, "m": [16, 64], "flops_per_s": rates, "retimed": retimed, "rows_capped": [[64, 8, 8, 32]]}

    return {"gemm": curve(gemm, ["m"]), "conv": {"k3": curve(k3, ["pixels"]), "k1": curve(k1, ["pixels"])},
            "sdpa": curve(sdpa, ["q"]), "memory": {"copy": [[4096, memory[0]], [65536, memory[1]]]}, "view_s": view}


def test_each_rate_is_the_median_of_the_passes():
    """Three passes; the second met a slow minute in the GEMM and the memory curve (half speed there), the third a
    slow second in one SDPA point. Every rate is the middle of its three; what is the same in all (axes, rows
    capped, the memory curve's sizes) stays as it was; ``retimed`` is every point retimed in any pass."""
    one = _table([100.0, 200.0], [50.0, 60.0], [10.0, 20.0], [300.0, 310.0], (1e9, 2e9), 1e-6, [[0]])
    two = _table([50.0, 100.0], [52.0, 58.0], [11.0, 19.0], [305.0, 300.0], (0.5e9, 1e9), 2e-6, [])
    three = _table([98.0, 204.0], [49.0, 61.0], [12.0, 21.0], [150.0, 320.0], (1.1e9, 2.1e9), 1.1e-6, [[1]])
    out = median_of_passes([one, two, three])
    assert out["gemm"]["flops_per_s"] == [98.0, 200.0]
    assert out["conv"]["k3"]["flops_per_s"] == [50.0, 60.0] and out["conv"]["k1"]["flops_per_s"] == [11.0, 20.0]
    assert out["sdpa"]["flops_per_s"] == [300.0, 310.0]  # the slow second of the third pass left out
    assert out["memory"]["copy"] == [[4096, 1e9], [65536, 2e9]] and out["view_s"] == 1.1e-6
    assert out["gemm"]["m"] == [16, 64] and out["gemm"]["rows_capped"] == [[64, 8, 8, 32]]
    assert all(out[c]["retimed"] == [[0], [1]] for c in ("gemm", "sdpa"))
    assert median_of_passes([one]) == one  # one pass: as measured


@pytest.mark.slow
def test_a_small_calibration_in_two_passes(monkeypatch):
    """Two passes through a small grid: the progress counts both, the reference is probed after each curve of each
    pass (1 + 3 x 2), and the rates are each between the two passes' (their median: the mean of two)."""
    import diffprobe.hardware.calibrate as cal_mod
    from diffprobe.hardware import passes

    monkeypatch.setattr(cal_mod, "MIN_RUN_S", 0.002)
    small = {"gemm": {"m": [16, 256], "n": [32, 256], "k": [32, 256]},
             "conv": {"pixels": [64, 1024], "cin": [4, 64], "cout": [4, 64]},
             "sdpa": {"q": [16, 256], "kv": [16, 256], "d": [8, 64]},
             "memory_bytes": [2 ** 12, 2 ** 18], "flop_cap": 1e8, "repeats": 2}
    seen, progress = [], []
    keep = passes.median_of_passes
    monkeypatch.setattr(passes, "median_of_passes", lambda tables: seen.extend(tables) or keep(tables))
    table = cal_mod.calibrate("test", grids=small, passes=2, progress=lambda s, d, t: progress.append((d, t)))
    assert table["meta"]["passes"] == 2 and len(table["meta"]["reference_probes"]) == 7 and len(seen) == 2
    # a pass: 8 GEMM points, 2 x 8 convolution points, 8 SDPA points, 5 memory classes x 2 sizes = 42; then the end
    assert progress[-1][0] == progress[-1][1] == 2 * 42 + 1
    for i, rate in enumerate(table["gemm"]["flops_per_s"][1][1]):
        a, b = (t["gemm"]["flops_per_s"][1][1][i] for t in seen)
        assert rate == pytest.approx((a + b) / 2)


def test_bad_passes_are_one_line(capsys):
    from diffprobe.cli import main

    assert main(["hardware", "calibrate", "--quick", "--passes", "0", "--out", "/tmp/never.toml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--passes 0: 1 to 9 passes" in err[0]
