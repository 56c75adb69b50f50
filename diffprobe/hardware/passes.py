"""A calibration timed in several passes through its grids (``diffprobe hardware calibrate --passes N``), combined
point by point: the median of each rate over the passes. A shared machine's slow minute lands in one pass, not in
all, where the runs of one point timed back to back all meet it (on the 2-core VMs here the reference GEMM and
convolution ran at 0.75x to 1.49x their median within one calibration)."""

from __future__ import annotations

import copy
import statistics

from diffprobe.errors import DiffprobeError, interruption

MOST = 9


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a calibration, carrying what it had measured: ``table``, a calibration table of the
    passes that finished (its ``meta.interrupted`` says what is missing; None before the first pass finished), and
    ``curves``, the curves that the unfinished pass had finished (nothing measured is lost)."""

    def __init__(self, cause: KeyboardInterrupt, table: dict | None, curves: dict):
        super().__init__(f"interrupted ({interruption(cause)})")
        self.cause, self.table, self.curves = cause, table, curves


def check(passes: int) -> None:
    """A number of passes is 1 to :data:`MOST`, or one line saying so."""
    if not 1 <= passes <= MOST:
        raise DiffprobeError(f"--passes {passes}: 1 to {MOST} passes through the grids")


FLOP_CURVES = (("gemm",), ("conv", "k3"), ("conv", "k1"), ("sdpa",), ("block_sparse",), ("block_index",))


def _merge(values: list):
    """The median of numbers that differ; dicts key by key and lists of one length item by item; the rest (equal
    values, strings, lists of other lengths) the first pass's."""
    first = values[0]
    if all(v == first for v in values[1:]):
        return first
    if all(isinstance(v, dict) for v in values) and all(v.keys() == first.keys() for v in values):
        return {k: _merge([v[k] for v in values]) for k in first}
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
        return [_merge([v[i] for v in values]) for i in range(len(first))]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return statistics.median(values)
    return first


def median_of_passes(tables: list[dict], unfinished: dict | None = None) -> dict:
    """One calibration table (curves, memory curves, ``view_s``; no ``meta``) from the same grids timed in each of
    ``tables``: every rate and time the median over them; each FLOP curve's ``retimed`` the points retimed in any
    pass. ``unfinished``: the curves a pass stopped before its end had finished, each in its curve's median too."""
    if unfinished:
        out = median_of_passes(tables)
        for key, curve in unfinished.items():
            out[key] = median_of_passes([{key: t[key]} for t in tables] + [{key: curve}])[key]
        return out
    out = copy.deepcopy(_merge(tables))  # the passes' own tables untouched (one pass's merge is that table)
    for path in FLOP_CURVES:
        curves = [_at(t, path) for t in tables]
        if all(c is not None for c in curves):
            again = {tuple(p) for c in curves for p in c.get("retimed", [])}
            _at(out, path)["retimed"] = [list(p) for p in sorted(again)]
    return out


def _at(table: dict, path: tuple):
    for key in path:
        table = table.get(key) if isinstance(table, dict) else None
    return table


def scale_flop_curves(table: dict, factor: float) -> None:
    """Every FLOP curve's rates in ``table`` (in place) times ``factor``: curves measured at one speed moved to
    another (:meth:`~diffprobe.hardware.steadiness.Speedometer.to_median`)."""
    import numpy as np

    for path in FLOP_CURVES:
        curve = _at(table, path)
        if curve is not None:
            curve["flops_per_s"] = (np.asarray(curve["flops_per_s"], dtype=float) * factor).tolist()


def scale_memory_curves(table: dict, factor_of, least_bytes: int) -> None:
    """Every memory curve's rates in ``table`` (in place) times ``factor_of(cls)``, at points moving ``least_bytes``
    or more (the smaller ones were timed as they ran)."""
    for key in ("memory", "memory_fresh"):
        for cls, pts in (table.get(key) or {}).items():
            factor = factor_of(cls)
            table[key][cls] = [[b, r * factor if b >= least_bytes else r] for b, r in pts]
