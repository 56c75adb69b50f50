"""Per-record times from the profiler (kineto / CUPTI): the time of the kernels each traced call launched.

The tracer wraps every call it handles in a cheap profiler marker (``torch._C._profiler._RecordFunctionFast``)
named after the call's first record. After the run, the profiler's raw events are joined to the records:

* a device event (``kernel``, ``gpu_memcpy``, ``gpu_memset``) carries ``linked_correlation_id`` = the
  ``correlation_id`` of the innermost CPU op that launched it;
* that CPU op started inside exactly one marker (the innermost marker whose interval holds its start), which
  names the call's records.

So a record's time on CUDA is the duration of the device work its call launched, never the tracer's host work.
A call that made several records (the three parts of one fused attention kernel) has its time split over them by
FLOPs, flagged ``time_apportioned``. On the CPU there are no device events: a record's time is its marker's
duration (the op as the profiler saw it). Device time outside every marker is reported, not hidden.

The join (:func:`join`) works on plain :class:`Event` tuples, so it is tested on synthetic event lists with known
answers as well as on the real profiler.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

from diffprobe.records.schema import OpRecord
from diffprobe.timing.ops import assign

MARKER = "diffprobe#"  # marker names: MARKER + index of the call's first record
DEVICE_KINDS = ("kernel", "gpu_memcpy", "gpu_memset")


class Event(NamedTuple):
    """One profiler event, as the join needs it."""

    kind: str  # "marker", "op" (a CPU op or annotation), or one of DEVICE_KINDS; "other" is ignored
    name: str
    start_ns: int
    end_ns: int
    correlation_id: int = 0
    linked_id: int = 0  # device events: the correlation id of the CPU op that launched them


class JoinResult(NamedTuple):
    seconds: dict[int, float]  # first record of a call -> its device seconds (CPU: its marker's seconds)
    first_start_ns: dict[int, int]  # first record of a call -> when its first device event (CPU: marker) began
    markers: int  # markers seen
    device_s: float  # all device time in the profile
    outside_s: float  # device time whose launching op lies in no marker
    busy_intervals: list[tuple[int, int]]  # every device event's (start, end), for busy/idle accounting
    device_by_call: dict[int, list[tuple[int, int, str]]]  # first record of a call -> its device events (start,
    # end, name)


def classify(raw) -> list[Event]:
    """Plain :class:`Event` tuples from kineto's raw events (``prof.profiler.kineto_results.events()``)."""
    out = []
    for e in raw:
        kind = e.activity_type()
        name = e.name()
        if name.startswith(MARKER):
            kind = "marker"
        elif kind in ("cpu_op", "user_annotation"):
            if e.linked_correlation_id() != 0:  # CUDA runtime calls carry CUPTI ids: not ops
                continue
            kind = "op"
        elif kind not in DEVICE_KINDS:
            continue
        out.append(Event(kind, name, e.start_ns(), e.end_ns(), e.correlation_id(), e.linked_correlation_id()))
    return out


def join(events: list[Event]) -> JoinResult:
    """Attribute device time to the markers of the calls that launched it (see the module docstring)."""
    markers = sorted(((e.start_ns, e.end_ns, int(e.name[len(MARKER):])) for e in events if e.kind == "marker"))
    starts = [m[0] for m in markers]

    def marker_of(t: int) -> int | None:
        """The innermost marker holding time ``t``: the latest-starting one that has not ended by then."""
        i = bisect.bisect_right(starts, t) - 1
        while i >= 0:
            s, e, first = markers[i]
            if e >= t:
                return first
            i -= 1
        return None

    op_marker = {e.correlation_id: marker_of(e.start_ns) for e in events if e.kind == "op"}
    device = [e for e in events if e.kind in DEVICE_KINDS]
    seconds: dict[int, float] = {}
    first_start: dict[int, int] = {}
    by_call: dict[int, list[tuple[int, int, str]]] = {}
    outside = 0.0
    for e in device:
        first = op_marker.get(e.linked_id)
        dur = (e.end_ns - e.start_ns) / 1e9
        if first is None:
            outside += dur
            continue
        seconds[first] = seconds.get(first, 0.0) + dur
        first_start[first] = min(first_start.get(first, e.start_ns), e.start_ns)
        by_call.setdefault(first, []).append((e.start_ns, e.end_ns, e.name))
    if not device:  # the CPU: each call's time is its marker's
        for s, e, first in markers:
            seconds[first] = (e - s) / 1e9
            first_start[first] = s
    return JoinResult(seconds, first_start, len(markers), sum((e.end_ns - e.start_ns) / 1e9 for e in device),
                      outside, sorted((e.start_ns, e.end_ns) for e in device), by_call)


def busy_seconds(intervals: list[tuple[int, int]]) -> float:
    """Length of the union of ``(start_ns, end_ns)`` intervals, in seconds (overlapping kernels count once)."""
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total / 1e9


def fill(rows: list[OpRecord], calls: dict[int, int], result: JoinResult, origin_ns: int) -> None:
    """Write ``time_s`` / ``start_s`` into ``rows`` (in place) for every call (first record -> record count);
    a call with several records has its time split over them by FLOPs (``time_apportioned``). A call that
    launched no device work gets 0 s (a view, a shape query)."""
    for first, n in calls.items():
        assign(rows, first, n, result.seconds.get(first, 0.0),
               (result.first_start_ns.get(first, origin_ns) - origin_ns) / 1e9)


class ProfilerTimer:
    """The tracer's timer on torch.profiler: a marker around every handled call, the join after the run.

    ``device``: ``cpu`` (CPU op events only) or ``cuda`` (CPU ops and CUDA kernels, memcpys and memsets).
    After :meth:`fill`, ``summary`` holds markers seen vs calls handled, device and outside-marker seconds and the
    busy intervals."""

    def __init__(self, device: str = "cpu"):
        import torch
        from torch.profiler import ProfilerActivity, profile

        self._torch = torch
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])
        self._profile = profile(activities=acts, record_shapes=False, with_stack=False)
        self._fast = torch._C._profiler._RecordFunctionFast
        self.calls: dict[int, int] = {}  # first record -> records of that call
        self.summary: dict = {}
        self.kernels: list[dict] = []  # after fill: each device event, its call's first record, start and duration
        self._origin_ns = 0

    def begin(self) -> None:
        import time

        self._profile.__enter__()
        self._origin_ns = time.time_ns()  # kineto's clock is the wall clock in ns

    def end(self) -> None:
        self._profile.__exit__(None, None, None)

    def start(self, first: int):
        marker = self._fast(MARKER + str(first))
        marker.__enter__()
        return marker

    def stop(self, marker, first: int) -> None:
        marker.__exit__(None, None, None)
        self.calls[first] = 1

    def count(self, first: int, n: int) -> None:
        self.calls[first] = n

    def fill(self, rows: list[OpRecord]) -> None:
        if self.calls:
            self.fill_from(rows, classify(self._profile.profiler.kineto_results.events()))

    def fill_from(self, rows: list[OpRecord], events: list[Event]) -> None:
        """:meth:`fill` from events already classified (the profiler's, or a test's)."""
        result = join(events)
        fill(rows, self.calls, result, self._origin_ns)
        by_stage: dict[str, list[tuple[int, int]]] = {}
        for first, device in result.device_by_call.items():
            by_stage.setdefault(rows[first].stage, []).extend((s, e) for s, e, _ in device)
        # every device event with the call it belongs to, in seconds from the start: the trace's GPU track
        self.kernels = [{"first": first, "name": name, "start_s": (s - self._origin_ns) / 1e9,
                         "dur_s": (e - s) / 1e9}
                        for first, device in result.device_by_call.items() for s, e, name in device]
        self.summary = {"calls": len(self.calls), "markers": result.markers, "device_s": result.device_s,
                        "outside_markers_s": result.outside_s, "busy_s": busy_seconds(result.busy_intervals),
                        "busy_by_stage": {k: busy_seconds(v) for k, v in by_stage.items()}}
        self.calls = {}
