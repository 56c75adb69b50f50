"""The machine's speed through a calibration and around a run it prices: the reference rate's FLOPs by hand, the
calibration's steadiness and a run's speed ratio on hand-made probes, and both carried into a real run's JSON."""

import pytest

import diffprobe.hardware.calibrate as cal_mod
from diffprobe.analyses.predict import machine_speed
from diffprobe.hardware.calibrate import reference_rate
from diffprobe.hardware.steadiness import steadiness


def test_the_reference_rate_counts_its_gemm_and_convolution_flops(monkeypatch):
    """FLOPs of a 1024 x 1280 x 1280 GEMM (2MNK) and of a 3x3 convolution of 320 channels over 2 x 32 x 32 pixels
    (2 x pixels x C_in x C_out x 9), over the seconds of both calls (each timed 0.25 s here)."""
    calls = []

    def quarter_second(fn, repeats):
        out = fn()
        calls.append(tuple(out.shape))
        return 0.25

    monkeypatch.setattr(cal_mod, "typical_seconds", quarter_second)
    gemm = 2 * 1024 * 1280 * 1280
    conv = 2 * (2 * 32 * 32) * 320 * 320 * 9
    assert reference_rate() == pytest.approx((gemm + conv) / 0.5, rel=1e-12)
    assert calls == [(1024, 1280), (2, 320, 32, 32)]


def test_a_real_reference_rate_is_a_plausible_rate():
    rate = reference_rate(repeats=2)
    assert 1e8 < rate < 1e14  # a CPU core does more than 0.1 GFLOP/s and less than 100 TFLOP/s


def test_steadiness_by_hand():
    steady = steadiness([100e9, 104e9, 98e9, 101e9])  # median 100.5, spread 6 / 100.5
    assert steady["reference_flops_per_s"] == pytest.approx(100.5e9)
    assert steady["reference_spread"] == pytest.approx(6 / 100.5)
    assert "steadiness_note" not in steady and steady["reference_probes"] == [100e9, 104e9, 98e9, 101e9]
    moved = steadiness([100e9, 80e9, 120e9])  # median 100, spread 0.4
    assert moved["reference_spread"] == pytest.approx(0.4)
    assert "moved by 40%" in moved["steadiness_note"] and "0.80x to 1.20x" in moved["steadiness_note"]


def test_a_runs_machine_speed_against_its_calibration():
    cal = {"meta": {"reference_flops_per_s": 100e9}}
    slow = machine_speed(cal, [80e9, 90e9])  # their mean, 85: the machine at 0.85x its calibrated speed
    assert slow["ratio"] == pytest.approx(0.85) and slow["run_flops_per_s"] == [80e9, 90e9]
    assert "at 0.85x" in slow["note"] and "moved since" in slow["note"]
    steady = machine_speed(cal, [95e9, 104e9])
    assert steady["ratio"] == pytest.approx(0.995) and "note" not in steady
    assert machine_speed({"meta": {}}, [95e9]) is None  # a calibration from before the probes
    assert machine_speed(cal, None) is None  # nothing timed around the run (analytic)


def test_a_calibration_at_one_speed_is_compared_by_its_light_probe(monkeypatch, tmp_path):
    """A calibration whose curves were scaled to the light GEMM probe's median (``speed_flops_per_s``) is the machine
    at that level, not at its five reference probes' median: the run's speed is the light probe's (the median of
    five before, and of five after), against that median."""
    from diffprobe.hardware import probes
    from diffprobe.run import profile

    cal = {"meta": {"reference_flops_per_s": 100e9, "speed_flops_per_s": 120e9}}
    fast = machine_speed(cal, [132e9, 144e9])  # mean 138: 1.15x the light probe's 120 (1.38x the reference's 100)
    assert fast["ratio"] == pytest.approx(1.15) and fast["probe"] == "light GEMM probe"
    assert fast["calibration_flops_per_s"] == 120e9 and "light GEMM probe at 1.15x" in fast["note"]
    assert machine_speed({"meta": {"reference_flops_per_s": 100e9}}, [100e9])["probe"] == (
        "reference GEMM and convolution")

    rates = iter([5e9, 1e9, 4e9, 2e9, 3e9])  # their median, 3e9
    monkeypatch.setattr(probes, "light_rate", lambda dtype, device: next(rates))
    monkeypatch.setattr("diffprobe.hardware.presets.get_preset", lambda name: type("P", (), {"calibration": {
        "meta": {**cal["meta"], "device": "cpu", "dtype": "float32"}}})())
    assert profile.reference_now(profile.ProfileConfig(model="tiny", hardware="x")) == 3e9


def test_the_report_says_how_fast_the_machine_ran_around_the_run(tmp_path):
    """The roofline section's notes carry the machine's speed around the run, where it was timed."""
    from diffprobe.report.profile import roofline_sections

    meta = {"cpu": "Test CPU", "cpu_capability": "AVX2", "threads": 2, "torch": "2.13.0", "date": "2026-12-06T01:00"}
    cal = {"meta": {"reference_flops_per_s": 100e9}}

    def notes(rates):
        roof = {"preset": "p", "preset_title": "P", "dtype": "float32", "ridge_intensity": 6.0,
                "prediction": {"total_s": 1.0, "by_stage": {"denoiser": 1.0}},
                "calibrated": {"total_s": 2.0, "by_stage": {"denoiser": 2.0}, "calibration": meta}}
        return roofline_sections(roof, tmp_path, machine_speed(cal, rates))[0].notes

    said = "the calibration's reference GEMM and convolution ran at 70 GFLOP/s around this run, 0.70x its 100 GFLOP/s"
    assert any(n.startswith("machine speed:") and said in n for n in notes([60e9, 80e9]))
    assert any(n.startswith("machine speed:") and "1.02x" in n for n in notes([102e9, 102e9]))
    assert not any(n.startswith("machine speed:") for n in notes(None))


def test_a_dip_is_timed_again_and_keeps_the_higher_rate():
    """A point below 0.88x its neighbours' median is timed again: a slow second (the run of points along the
    innermost axis the grid was timed in, all low together) recovers its neighbours' rate; a slow shape, timed slow
    again, keeps its own."""
    from diffprobe.hardware.steadiness import dips, retime_dips

    flat = [[100.0] * 3 for _ in range(3)]
    flat[1][1] = 80.0  # neighbours 100, 100, 100, 100
    assert dips(flat) == [(1, 1)]
    assert retime_dips(flat, lambda idx: 99.0) == ([[100.0] * 3, [100.0, 99.0, 100.0], [100.0] * 3], [[1, 1]])
    assert retime_dips(flat, lambda idx: 70.0)[0][1][1] == 80.0  # slow again: the higher of the two
    flat[1][1] = 89.0  # 0.89x its neighbours: within the line
    assert dips(flat) == []
    grid = [[[100.0] * 3 for _ in range(3)] for _ in range(3)]
    for i in range(3):
        grid[i][1][1] = 60.0  # a slow second along axis 0: each point's axis-0 neighbours low too, the rest not
    assert dips(grid) == [(0, 1, 1), (1, 1, 1), (2, 1, 1)]
    timed = []
    rates, again = retime_dips(grid, lambda idx: timed.append(idx) or 100.0)
    assert timed == [(0, 1, 1), (1, 1, 1), (2, 1, 1)] and again == [[0, 1, 1], [1, 1, 1], [2, 1, 1]]
    assert all(v == 100.0 for plane in rates for row in plane for v in row)
    rising = [10.0, 100.0, 110.0]  # a small shape's low rate: flagged, timed again as slow, kept
    assert retime_dips(rising, lambda idx: 11.0) == ([11.0, 100.0, 110.0], [[0]])


def test_an_interrupt_while_timing_the_machine_after_a_run_keeps_the_run(tmp_path, monkeypatch):
    """Ctrl-C in the reference probe after a measured run: run.json holds the run's stage times, status
    interrupted (the probe's rates are left out)."""
    import json

    import diffprobe.run.profile as profile
    from diffprobe.hardware.preset import to_toml
    from diffprobe.run.profile import ProfileConfig, run_profile
    from tests.hardware.test_predict import _preset

    path = tmp_path / "cal.toml"
    path.write_text(to_toml(_preset().to_dict()))
    probes = iter([1e11])

    def probe(cfg):
        try:
            return next(probes)
        except StopIteration:
            raise KeyboardInterrupt from None

    monkeypatch.setattr(profile, "reference_now", probe)
    with pytest.raises(KeyboardInterrupt):
        run_profile(ProfileConfig(model="tiny", steps=2, sample_steps=0, trace_ops=False, hardware=str(path),
                                  out=str(tmp_path / "run")))
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    assert doc["status"] == "interrupted" and "after the measured run" in doc["error"]
    assert doc["stages"]["denoiser"] > 0 and "machine_speed" not in doc


def test_the_whole_calibration_ends_with_a_fifth_probe(monkeypatch):
    """calibrate_machine times the reference once more after the kernel curve and the fits, and the steadiness covers
    all five probes (median of 1..5 = 3, spread (5 - 1) / 3)."""
    import diffprobe.run.calibration as calibration

    def no_kernel(*a, **k):
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: {"meta": {"reference_probes": [1.0, 2.0, 3.0, 4.0]}})
    monkeypatch.setattr(calibration, "kernel_curve", no_kernel)
    monkeypatch.setattr(calibration, "fit_overhead", lambda *a, **k: {})
    monkeypatch.setattr(calibration, "fit_transformer_overhead", lambda *a, **k: 0.0)
    monkeypatch.setattr(calibration, "reference_rate", lambda dtype, device: 5.0)
    meta = calibration.calibrate_machine("quick", "float32", "cpu", {})["meta"]
    assert meta["reference_probes"] == [1.0, 2.0, 3.0, 4.0, 5.0] and meta["reference_flops_per_s"] == 3.0
    assert meta["reference_spread"] == pytest.approx(4 / 3) and "moved by 133%" in meta["steadiness_note"]
