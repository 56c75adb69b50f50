"""A calibration interrupted (Ctrl-C, SIGTERM) keeps what it measured: the passes that finished as a preset (the
unfinished pass's finished curves in their medians, what is missing said in ``meta.interrupted`` and in every
prediction made from it), or, before the first pass finished, its finished curves as JSON beside the preset's path.
The curve functions are replaced by hand-made curves (pass n's rates n times the first's), so the medians are
known without timing anything."""

import copy
import json
import os
import signal

import pytest

from diffprobe.cli import main
from diffprobe.hardware.preset import from_dict, load_file
from tests.hardware.test_predict import _preset


def _scaled(curve: dict, n: int) -> dict:
    out = copy.deepcopy(curve)
    out["flops_per_s"] = [[[r * n for r in row] for row in plane] for plane in curve["flops_per_s"]]
    return out


def _fake_curves(monkeypatch, stop):
    """calibrate()'s curves from :func:`_preset`'s synthetic calibration, the n-th call of each curve at n times its
    rates; ``stop(curve, n)`` runs first (where the interruption lands). The reference probes: 1 GFLOP/s."""
    import diffprobe.hardware.calibrate as cal_mod

    cal = _preset().calibration
    calls: dict = {}

    def curve(name, make):
        def fn(*args, **kwargs):
            calls[name] = n = calls.get(name, 0) + 1
            stop(name, n)
            return make(n)
        return fn

    monkeypatch.setattr(cal_mod, "gemm_curve", curve("gemm", lambda n: _scaled(cal["gemm"], n)))
    monkeypatch.setattr(cal_mod, "conv_curve", curve("conv", lambda n: {k: _scaled(c, n)
                                                                        for k, c in cal["conv"].items()}))
    monkeypatch.setattr(cal_mod, "sdpa_curve", curve("sdpa", lambda n: _scaled(cal["sdpa"], n)))
    monkeypatch.setattr(cal_mod, "_memory", lambda *a: {"memory": copy.deepcopy(cal["memory"])})
    monkeypatch.setattr(cal_mod, "view_seconds", lambda *a: cal["view_s"])
    monkeypatch.setattr(cal_mod, "reference_rate", lambda *a, **k: 1e9)
    monkeypatch.setattr(cal_mod, "last_level_cache_bytes", lambda *a: 1 << 20)
    return cal


def _stop_at(curve: str, call: int, interrupt):
    def stop(name, n):
        if (name, n) == (curve, call):
            interrupt()
    return stop


def _ctrl_c():
    raise KeyboardInterrupt


def test_a_pass_interrupted_keeps_the_passes_that_finished_and_its_own_curves(monkeypatch):
    """Two passes asked, Ctrl-C in the second's SDPA curve: the first pass is a calibration, the second's GEMM and
    convolution curves in their medians (the mean of the two: 1.5 and 6 GFLOP/s for the GEMM's 1 and 4 then 2
    and 8), the SDPA the first pass's alone."""
    from diffprobe.hardware.calibrate import calibrate
    from diffprobe.hardware.passes import Interrupted

    cal = _fake_curves(monkeypatch, _stop_at("sdpa", 2, _ctrl_c))
    with pytest.raises(Interrupted) as caught:
        calibrate("test", grids={"gemm": {}, "conv": {}, "sdpa": {}, "flop_cap": 1, "repeats": 1,
                                 "memory_bytes": [1]}, passes=2)
    table = caught.value.table
    assert table["gemm"]["flops_per_s"] == [[[1.5e9] * 2] * 2, [[6e9] * 2] * 2]
    assert table["conv"]["k3"]["flops_per_s"] == [[[3e9] * 2] * 2, [[3e9] * 2] * 2]
    assert table["sdpa"]["flops_per_s"] == cal["sdpa"]["flops_per_s"]
    assert table["meta"]["passes"] == 1 and table["meta"]["reference_probes"] == [1e9] * 6
    assert table["meta"]["interrupted"] == ("interrupted (Ctrl-C) after 1 of 2 passes through the grids (the "
                                            "unfinished pass's curves in the medians too: gemm, conv)")
    assert set(caught.value.curves) == {"gemm", "conv"}
    from_dict({**_preset().to_dict(), "calibration": table}, "kept")  # a calibration: it reads back as one


def _cli_machine(monkeypatch):
    """this-cpu as the synthetic preset (its ceilings not measured again)."""
    import diffprobe.hardware.measure as measure

    monkeypatch.setattr(measure, "this_cpu", lambda remeasure=False: _preset())


def test_sigterm_in_the_first_pass_keeps_its_finished_curves_beside_the_preset(tmp_path, monkeypatch, capsys):
    """SIGTERM (the real signal, through the CLI's handler) in the first pass's convolution curve: no calibration
    yet, so no preset; the GEMM curve it had measured is in <name>.partial.json; exit 143."""
    _cli_machine(monkeypatch)
    cal = _fake_curves(monkeypatch, _stop_at("conv", 1, lambda: os.kill(os.getpid(), signal.SIGTERM)))
    path = tmp_path / "cal.toml"
    assert main(["hardware", "calibrate", "--quick", "--out", str(path), "-q"]) == 143
    err = capsys.readouterr().err.splitlines()
    partial = tmp_path / "cal.partial.json"
    assert not path.exists() and err == [
        f"diffprobe: warning: kept: {partial}, the curves measured before the interruption (not a preset: calibrate "
        "again)", "diffprobe: interrupted (SIGTERM)"]
    kept = json.loads(partial.read_text())
    assert kept["curves"] == {"gemm": cal["gemm"]} and kept["interrupted"].startswith(
        "interrupted (SIGTERM) in the first pass through the grids, after the curves gemm")


def test_ctrl_c_in_the_overhead_fit_keeps_the_curves_and_every_prediction_says_so(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the transformer denoisers' overhead fit: the curves, the (absent) kernel's note and the UNet fit
    are a preset, written; its ``meta.interrupted`` names what is missing, and a run priced by it carries that
    as its calibrated prediction's caveat."""
    import diffprobe.run.calibration as calibration

    _cli_machine(monkeypatch)
    _fake_curves(monkeypatch, lambda name, n: None)

    def no_kernel(*a, **k):
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(calibration, "kernel_curve", no_kernel)
    monkeypatch.setattr(calibration, "fit_overhead", lambda *a, **k: {"denoiser": 1e-5, "text_encoder": 2e-5})
    monkeypatch.setattr(calibration, "fit_transformer_overhead", lambda *a, **k: _ctrl_c())
    path = tmp_path / "cal.toml"
    assert main(["hardware", "calibrate", "--quick", "--out", str(path), "-q"]) == 130
    note = "interrupted (Ctrl-C) after the curves; not measured: a transformer denoiser's own overhead"
    assert capsys.readouterr().err.splitlines() == [f"diffprobe: warning: kept: {path}, a calibration {note}",
                                                    "diffprobe: interrupted"]
    preset = load_file(path)
    assert preset.calibration["meta"]["interrupted"] == note and "denoiser_overhead_s" not in preset.calibration
    assert preset.calibration["overhead_s"] == {"denoiser": 1e-5, "text_encoder": 2e-5}
    assert "(interrupted: see calibration.meta.interrupted)" in preset.source
    assert main(["profile", "--model", "tiny", "--steps", "1", "--mode", "analytic", "--hardware", str(path),
                 "--format", "json", "-q", "--out", str(tmp_path / "run")]) == 0
    caveat = json.loads(capsys.readouterr().out)["roofline"]["calibrated"]["caveat"]
    assert f"the calibration was {note}" in caveat


@pytest.mark.parametrize("where, said", [
    ("probe", []),  # the reference probe that opens the calibration
    ("gemm", ["diffprobe: warning: interrupted before the first curve was finished: nothing written"]),
])
def test_ctrl_c_before_a_curve_finished_writes_nothing(tmp_path, monkeypatch, capsys, where, said):
    """Ctrl-C before any curve was finished: nothing to keep, nothing written, and the lines say so."""
    import diffprobe.hardware.calibrate as cal_mod

    _cli_machine(monkeypatch)
    _fake_curves(monkeypatch, _stop_at("gemm", 1, _ctrl_c))
    if where == "probe":
        monkeypatch.setattr(cal_mod, "reference_rate", lambda *a, **k: _ctrl_c())
    assert main(["hardware", "calibrate", "--quick", "--out", str(tmp_path / "cal.toml"), "-q"]) == 130
    assert capsys.readouterr().err.splitlines() == [*said, "diffprobe: interrupted"]
    assert list(tmp_path.iterdir()) == []


def _kernel_passes(monkeypatch, stop):
    """calibrate_machine() with the curves of the synthetic preset, the fits and the probe stubbed, and a block-sparse
    kernel whose n-th pass runs at n times the first's rates (1 and 4 GFLOP/s), ``stop(n)`` first."""
    import diffprobe.run.calibration as calibration
    from tests.hardware.test_kernel_curve import _curve

    calls = []

    def kernel_curve(*a, progress=None, **k):
        calls.append(len(calls) + 1)
        stop(len(calls))
        for done in (1, 2):  # a grid of two points, counted by each pass from 1
            progress("block-sparse kernel", done, 2)
        return _curve([[[1e9 * len(calls), 4e9 * len(calls)]], [[1e9 * len(calls), 4e9 * len(calls)]]])

    def index_curve(*a, progress=None, **k):  # one point, at n GFLOP/s in the n-th pass
        progress("block index", 1, 1)
        n = len(calls)
        return {"tokens": [1024], "d": [64], "heads": [4], "flops_per_s": [[[1e9 * n]]], "block_size": 64}

    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: copy.deepcopy(_preset().calibration))
    monkeypatch.setattr(calibration, "kernel_curve", kernel_curve)
    monkeypatch.setattr(calibration, "index_curve", index_curve)
    monkeypatch.setattr(calibration, "fit_overhead", lambda *a, **k: {"denoiser": 1e-5})
    monkeypatch.setattr(calibration, "fit_transformer_overhead", lambda *a, **k: 2e-5)
    monkeypatch.setattr(calibration, "reference_rate", lambda *a, **k: 1e9)
    return calibration


def test_the_block_sparse_curve_in_as_many_passes_as_the_grids(monkeypatch):
    """--passes 3: the kernel's curve and the block index's timed three times, each rate the median (the second
    pass's: 2 and 8 GFLOP/s, 2 GFLOP/s); Ctrl-C in the kernel's second pass keeps the first pass's curves, said in
    meta.block_sparse_passes."""
    from diffprobe.hardware.passes import Interrupted

    calibration = _kernel_passes(monkeypatch, lambda n: None)
    seen = []
    table = calibration.calibrate_machine("quick", "float32", "cpu", _preset().to_dict(), passes=3,
                                          progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert table["block_sparse"]["flops_per_s"] == [[[2e9, 8e9]], [[2e9, 8e9]]]
    assert table["block_index"]["flops_per_s"] == [[[2e9]]]
    # one count per curve over the three passes (two points each for the kernel, one for the index)
    assert [s[1:] for s in seen if s[0] == "block-sparse kernel"] == [(n, 6) for n in range(1, 7)]
    assert [s[1:] for s in seen if s[0] == "block index"] == [(n, 3) for n in range(1, 4)]
    assert table["meta"]["block_sparse_passes"] == 3 and "block_sparse_note" not in table["meta"]

    calibration = _kernel_passes(monkeypatch, lambda n: _ctrl_c() if n == 2 else None)
    with pytest.raises(Interrupted) as caught:
        calibration.calibrate_machine("quick", "float32", "cpu", _preset().to_dict(), passes=3,
                                      progress=lambda *a: None)
    kept = caught.value.table
    assert kept["block_sparse"]["flops_per_s"] == [[[1e9, 4e9]], [[1e9, 4e9]]]
    assert kept["block_index"]["flops_per_s"] == [[[1e9]]]
    assert kept["meta"]["block_sparse_passes"] == 1 and kept["meta"]["interrupted"] == (
        "interrupted (Ctrl-C) after the curves; not measured: the overhead between operators (its predictions leave "
        "it out), a transformer denoiser's own overhead")
