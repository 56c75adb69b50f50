"""How steady the machine was while it was timed: the spread of a calibration's reference probes
(:func:`steadiness`), and the grid points a slow moment left below their neighbours (:func:`dips`, timed again by
:func:`retime_dips`). Pure functions of the rates measured (:mod:`diffprobe.hardware.calibrate` times them)."""

from __future__ import annotations

import statistics

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
                                  "their median between the curves): its curves were measured at different speeds; "
                                  "calibrate again when the machine is quieter")
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
