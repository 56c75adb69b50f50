"""How steady the machine was while it was timed: the spread of a calibration's reference probes
(:func:`steadiness`), and the grid points a slow moment left below their neighbours (:func:`dips`, timed again by
:func:`retime_dips`), pure functions of the rates measured (:mod:`diffprobe.hardware.calibrate` times them); and
the :class:`Speedometer` that prices every point of a calibration's curves at one speed of the machine."""

from __future__ import annotations

import contextlib
import statistics
import time

STEADY = 0.10  # a machine whose reference rate moves more than this is flagged


def steadiness(probes: list[float]) -> dict:
    """A calibration's ``meta`` entries from its
    :func:`~diffprobe.hardware.calibrate.reference_rate` probes: their median
    (``reference_flops_per_s``), the probes, their spread ((max - min) / median) and, past :data:`STEADY`, one line
    saying the curves were measured at different speeds."""
    mid = statistics.median(probes)
    spread = (max(probes) - min(probes)) / mid
    out = {"reference_flops_per_s": mid, "reference_probes": list(probes), "reference_spread": spread}
    if spread > STEADY:
        out["steadiness_note"] = (f"this machine's speed moved by {spread:.0%} while it was calibrated (a reference "
                                  f"GEMM and convolution ran at {min(probes) / mid:.2f}x to {max(probes) / mid:.2f}x "
                                  "their median between the curves): its curves were measured at different speeds "
                                  "(scaled to one where light probes were timed beside them, but for the smallest "
                                  "memory points, view_s and the overhead fits); calibrate again when the machine is "
                                  "quieter")
    return out


DIP = 0.88  # a grid point below this fraction of its neighbours' median rate is timed again


def dips(rates, least: float = DIP) -> list[tuple[int, ...]]:
    """The grid points whose rate is below ``least`` x the median of their neighbours (one step either way along
    each axis)."""
    import numpy as np

    rates = np.asarray(rates, dtype=float)
    found = []
    for idx in np.ndindex(rates.shape):
        near = [rates[idx[:ax] + (i,) + idx[ax + 1:]] for ax in range(rates.ndim) for i in (idx[ax] - 1, idx[ax] + 1)
                if 0 <= i < rates.shape[ax]]
        if near and rates[idx] < least * float(np.median(near)):
            found.append(idx)
    return found


def retime_dips(rates: list, measure) -> tuple[list, list]:
    """The grid's :func:`dips` timed again once the whole grid was (``measure(idx)`` -> its rate), each keeping the
    higher of its two rates; with the points retimed. A grid is timed in order, so a shared machine that slows for a
    second slows a run of neighbours along its innermost axis, which the others' neighbours then show for what it is
    (here a GEMM point timed at 123 GFLOP/s among neighbours at 150-180 ran at 179 when timed again); a shape that
    is slow is slow again, and keeps its rate."""
    import numpy as np

    out = np.asarray(rates, dtype=float)
    found = dips(out)
    for idx in found:
        out[idx] = max(out[idx], measure(idx))
    return out.tolist(), [list(i) for i in found]


PROBE_EVERY_S = 1.0  # a point's speed is that of the light probe timed after it, at most this long before

# Which probe a memory curve's point follows, by class: on the Intel Xeon VM (the AMD EPYC not measured) a large add,
# copy or group norm slowed with a copy (p10-p90 spread of a 16 MiB add over 44 samples: 0.12 as timed, 0.08 over the
# copy probe, 0.26 over the GEMM probe), silu and softmax — whose exp computes — with the GEMM (a 16 MiB silu 0.46,
# 0.38 and 0.26)
MEMORY_SPEED = {"elementwise": "bandwidth", "copy": "bandwidth", "norm": "bandwidth", "activation": "flops",
                "softmax": "flops"}
# below this a memory op is its dispatch cost, which neither probe tracked (256 KiB: 0.33-0.38 as timed, 0.25-0.51
# over either probe): those points stay as timed
SPEED_FROM_BYTES = 1 << 20


class Speedometer:
    """The machine's speed through a calibration, so that each curve's point is priced at one speed: ``probe()``
    (the light probes' rates by kind, :func:`~diffprobe.hardware.probes.light_speeds`: ``flops`` and ``bandwidth``;
    a bare number is ``flops``) timed after a point unless the last probe is younger than ``every`` seconds;
    :meth:`factor` scales the point's rate to the first probe's speed, :meth:`to_median` the curves from there to the
    median probe's. On these 2-core VMs a GEMM, SDPA and the block-sparse kernel slowed together by a fifth to a
    quarter within a second and stayed there (rates relative to each other steady within a few percent), while a
    calibration's curves, minutes apart, were timed up to 43% apart in speed: the kernel's curve came out 1.2x SDPA's
    rate where both timed at one moment ran at 0.85x. A kind the probe does not time scales by 1."""

    def __init__(self, probe, every: float = PROBE_EVERY_S, clock=None):
        self.probe, self.every, self.clock = probe, every, clock or time.perf_counter
        self.samples: list[tuple[float, dict]] = []  # (when, {kind: rate})

    def factor(self, kind: str = "flops") -> float:
        """The first probe's speed over the speed now: a rate measured now times this is the rate at the first
        probe's speed."""
        if not self.samples or self.clock() - self.samples[-1][0] >= self.every:
            rates = self.probe()
            self.samples.append((self.clock(), rates if isinstance(rates, dict) else {"flops": rates}))
        first, now = self.samples[0][1], self.samples[-1][1]
        return first[kind] / now[kind] if kind in now else 1.0

    def rates(self, kind: str = "flops") -> list[float]:
        """The probes' rates of one kind, in the order timed."""
        return [r[kind] for _, r in self.samples if kind in r]

    def to_median(self, kind: str = "flops") -> float:
        """The median probe's speed over the first's (1 before any probe, or for a kind not probed)."""
        rates = self.rates(kind)
        return statistics.median(rates) / rates[0] if rates else 1.0

    def meta(self) -> dict:
        """A calibration's ``meta`` entries: the probes' count, median and spread (the copy probe's as
        ``speed_bytes_per_s`` and ``speed_bytes_spread``, where timed)."""
        out = {"speed_probes": len(self.samples)}
        for kind, (mid_key, spread_key) in (("flops", ("speed_flops_per_s", "speed_spread")),
                                            ("bandwidth", ("speed_bytes_per_s", "speed_bytes_spread"))):
            rates = self.rates(kind)
            mid = statistics.median(rates) if rates else None
            if rates or kind == "flops":
                out.update({mid_key: mid, spread_key: (max(rates) - min(rates)) / mid if rates else None})
        return out


_ACTIVE: list[Speedometer] = []


@contextlib.contextmanager
def speed_normalized(meter: Speedometer):
    """Within: each curve's point is scaled by ``meter`` (:func:`speed_factor`, :func:`memory_speed_factor`)."""
    _ACTIVE.append(meter)
    try:
        yield meter
    finally:
        _ACTIVE.remove(meter)


def speed_factor(kind: str = "flops") -> float:
    """The active :class:`Speedometer`'s :meth:`~Speedometer.factor`, 1 where none is (a curve timed alone)."""
    return _ACTIVE[-1].factor(kind) if _ACTIVE else 1.0


def memory_speed_factor(cls: str, moved: float) -> float:
    """:func:`speed_factor` by the probe a memory class's point follows (:data:`MEMORY_SPEED`); 1 below
    :data:`SPEED_FROM_BYTES` moved."""
    return speed_factor(MEMORY_SPEED[cls]) if moved >= SPEED_FROM_BYTES else 1.0
