"""How steady the machine was while it was timed: the spread of a calibration's reference probes
(:func:`steadiness`), and the grid points a slow moment left below their neighbours (:func:`dips`, timed again by
:func:`retime_dips`), pure functions of the rates measured (:mod:`diffprobe.hardware.calibrate` times them); and the
:class:`Speedometer` that prices every point of a calibration's FLOP curves at one speed of the machine."""

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
                                  "(the FLOP curves are scaled to one where a light probe was timed beside them; the "
                                  "memory curves are not); calibrate again when the machine is quieter")
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


class Speedometer:
    """The machine's speed through a calibration, so that each FLOP curve's point is priced at one speed: ``probe()``
    (a light GEMM's FLOP/s, :func:`~diffprobe.hardware.calibrate.light_rate`) timed after a point unless the last
    probe is younger than ``every`` seconds; :meth:`factor` scales the point's rate to the first probe's speed,
    :meth:`to_median` the curves from there to the median probe's. On these 2-core VMs a GEMM, SDPA and the
    block-sparse kernel slowed together by a fifth to a quarter within a second and stayed there (rates relative to
    each other steady within a few percent), while a calibration's curves, minutes apart, were timed up to 43% apart
    in speed: the kernel's curve came out 1.2x SDPA's rate where both timed at one moment ran at 0.85x."""

    def __init__(self, probe, every: float = PROBE_EVERY_S, clock=None):
        self.probe, self.every, self.clock = probe, every, clock or time.perf_counter
        self.samples: list[tuple[float, float]] = []  # (when, FLOP/s)

    def factor(self) -> float:
        """The first probe's speed over the speed now: a rate measured now times this is the rate at the first
        probe's speed."""
        if not self.samples or self.clock() - self.samples[-1][0] >= self.every:
            rate = self.probe()
            self.samples.append((self.clock(), rate))
        return self.samples[0][1] / self.samples[-1][1]

    def to_median(self) -> float:
        """The median probe's speed over the first's (1 before any probe)."""
        if not self.samples:
            return 1.0
        return statistics.median(r for _, r in self.samples) / self.samples[0][1]

    def meta(self) -> dict:
        """A calibration's ``meta`` entries: the probes' count, median and spread."""
        rates = [r for _, r in self.samples]
        mid = statistics.median(rates) if rates else None
        return {"speed_probes": len(rates), "speed_flops_per_s": mid,
                "speed_spread": (max(rates) - min(rates)) / mid if rates else None}


_ACTIVE: list[Speedometer] = []


@contextlib.contextmanager
def speed_normalized(meter: Speedometer):
    """Within: each FLOP curve's point is scaled by ``meter`` (:func:`speed_factor`)."""
    _ACTIVE.append(meter)
    try:
        yield meter
    finally:
        _ACTIVE.remove(meter)


def speed_factor() -> float:
    """The active :class:`Speedometer`'s :meth:`~Speedometer.factor`, 1 where none is (a curve timed alone)."""
    return _ACTIVE[-1].factor() if _ACTIVE else 1.0
