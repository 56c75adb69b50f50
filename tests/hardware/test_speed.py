"""Every point of a calibration's curves priced at one speed of the machine: a synthetic machine that slows down
halfway through a grid, its light probe slowing with it, gives the curve it would have given at one speed; the
curves moved to the median probe's speed; the probe timed at most once a second; a memory curve's point follows the
probe of its class (a copy for elementwise, copy and norm, the GEMM for activation and softmax) from a megabyte on."""

import pytest

from diffprobe.hardware.steadiness import Speedometer, speed_factor, speed_normalized


class _Machine:
    """A clock that advances 0.6 s per point timed, and a speed that drops to ``slow`` from point ``after`` + 1 on; a
    probe timed after a point sees that point's speed."""

    def __init__(self, after: int, slow: float):
        self.t, self.points, self.after, self.slow, self.probes, self.now = 0.0, 0, after, slow, 0, 1.0

    def rate(self, true_rate: float) -> float:  # a point timed: its true rate at the speed it ran at
        self.now = 1.0 if self.points < self.after else self.slow
        self.points += 1
        self.t += 0.6
        return true_rate * self.now

    def probe(self) -> float:  # the light GEMM: 300 GFLOP/s at full speed
        self.probes += 1
        return 3e11 * self.now


def test_the_factor_scales_to_the_first_probes_speed_and_probes_once_a_second():
    m = _Machine(after=2, slow=0.5)  # points 1 and 2 at full speed, the rest (and the probes after them) at half
    meter = Speedometer(m.probe, every=1.0, clock=lambda: m.t)
    seen = []
    for _ in range(6):
        measured = m.rate(1e9)
        seen.append(measured * meter.factor())
    # probes after points 1, 3 (t = 0.6, 1.8: 1.2 s after the first) and 5 (t = 3.0); point 2 priced with the probe
    # of point 1, 4 with that of 3 (each at the speed it ran at), 6 with that of 5
    assert m.probes == 3
    assert seen == pytest.approx([1e9] * 6)
    assert meter.to_median() == pytest.approx(0.5)  # probes 3e11, 1.5e11, 1.5e11: the median 1.5e11
    assert meter.meta() == {"speed_probes": 3, "speed_flops_per_s": 1.5e11, "speed_spread": pytest.approx(1.0)}


def test_a_grid_timed_while_the_machine_slows_comes_out_at_one_speed(monkeypatch):
    """attention/bench's grid loop (the block-sparse kernel's and the index's curves): a machine at half speed from
    the third of four points on. Alone the last two points are timed at half the rate (no dip among themselves); under a
    speedometer every point is the true rate (2 GFLOP/s at 1024 tokens, 4 at 4096) at the first probe's speed."""
    from diffprobe.attention.bench import _timed_grid

    grid = {"tokens": [1024, 4096], "d": [64], "density": [0.25, 1.0]}
    true = {1024: 2e9, 4096: 4e9}

    def run(meter):
        m = _Machine(after=2, slow=0.5)
        if meter:
            meter = Speedometer(m.probe, every=0.0, clock=lambda: m.t)  # a probe after every point
            with speed_normalized(meter):
                return _timed_grid(grid, ("tokens", "d", "density"), lambda n, d, p: m.rate(true[n]), "k", "cpu",
                                   None)["flops_per_s"]
        return _timed_grid(grid, ("tokens", "d", "density"), lambda n, d, p: m.rate(true[n]), "k", "cpu",
                           None)["flops_per_s"]

    assert run(False) == [[[2e9, 2e9]], [[2e9, 2e9]]]  # 4096's points at half speed: no dip among themselves
    assert run(True) == [[[2e9, 2e9]], [[4e9, 4e9]]]
    assert speed_factor() == 1.0  # none active outside


def test_a_calibration_is_moved_to_its_median_probes_speed(monkeypatch):
    """calibrate_machine(): the synthetic curves scaled by median / first probe; meta says so."""
    import copy

    import numpy as np

    from tests.hardware.test_interrupted_calibration import _kernel_passes
    from tests.hardware.test_predict import _preset

    calibration = _kernel_passes(monkeypatch, lambda n: None)
    # the GEMM probe halves after the first (flops to the median: 0.5), the copy probe triples (bandwidth: 3)
    probes = iter([{"flops": 4e11, "bandwidth": 1e10}, {"flops": 2e11, "bandwidth": 3e10},
                   {"flops": 2e11, "bandwidth": 3e10}])
    monkeypatch.setattr(calibration, "light_speeds", lambda *a: next(probes))
    gemm = copy.deepcopy(_preset().calibration["gemm"]["flops_per_s"])
    mib = 1 << 20
    memory = {c: [[1000, 1e9], [mib - 1, 2e9], [mib, 4e9]] for c in ("elementwise", "norm", "copy", "softmax",
                                                                     "activation")}

    def calibrate(*a, **k):  # three curve points timed under the speedometer (each gets a probe: 1 s apart)
        for _ in range(3):
            speed_factor()
            calibration_clock[0] += 1.0
        return {**copy.deepcopy(_preset().calibration), "memory": copy.deepcopy(memory)}

    calibration_clock = [0.0]
    monkeypatch.setattr(calibration, "calibrate", calibrate)
    monkeypatch.setattr(calibration, "Speedometer",
                        lambda probe: Speedometer(probe, 1.0, clock=lambda: calibration_clock[0]))
    table = calibration.calibrate_machine("quick", "float32", "cpu", _preset().to_dict())
    assert np.asarray(table["gemm"]["flops_per_s"]) == pytest.approx(np.asarray(gemm) * 0.5)
    # a megabyte and more moved by its class's probe; below it as timed
    for cls, factor in (("elementwise", 3.0), ("norm", 3.0), ("copy", 3.0), ("softmax", 0.5), ("activation", 0.5)):
        assert table["memory"][cls] == [[1000, 1e9], [mib - 1, 2e9], [mib, pytest.approx(4e9 * factor)]]
    meta = table["meta"]
    assert meta["speed_probes"] == 3 and "median speed" in meta["speed_normalized"]
    assert meta["speed_bytes_per_s"] == 3e10 and meta["speed_bytes_spread"] == pytest.approx(2 / 3)


def test_memory_points_follow_their_class_probe_from_a_megabyte(monkeypatch):
    """calibrate.memory_curves under a speedometer on a synthetic machine whose memory halves in speed after the
    second size while its GEMM does not: every call after that takes twice as long. The add, copy and group norm
    points of a megabyte or more come out at the first probe's speed (the copy probe halved with them); silu's and
    softmax's stay slow (the GEMM probe did not move); the first size's points, below a megabyte, as timed (no probe
    timed for them)."""
    import torch

    from diffprobe.hardware import calibrate as cal

    calls = [0]

    def seconds(fn, repeats):  # five classes a size: the third size at half speed
        calls[0] += 1
        return 1.0 if calls[0] <= 10 else 2.0

    monkeypatch.setattr(cal, "typical_seconds", seconds)
    meter = Speedometer(lambda: {"flops": 3e11, "bandwidth": 1e10 if calls[0] <= 10 else 5e9}, every=0.0)
    with speed_normalized(meter):
        out = cal.memory_curves([1 << 16, 1 << 21, 1 << 22], torch.float32, "cpu", 3, lambda n: None)
    assert len(meter.samples) == 10  # a probe after each point of the two larger sizes
    for cls, (small, fast, slow) in out.items():
        assert small[0] < (1 << 20) <= fast[0]
        assert small[1] == pytest.approx(small[0]) and fast[1] == pytest.approx(fast[0])  # at full speed
        want = slow[0] / 1.0 if cls in ("elementwise", "copy", "norm") else slow[0] / 2.0
        assert slow[1] == pytest.approx(want), cls
    # five copy probes at 1e10, five at 5e9: the median 7.5e9
    assert meter.to_median("bandwidth") == pytest.approx(0.75) and meter.to_median("flops") == 1.0
