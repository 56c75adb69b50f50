"""Per-op times for a traced run: the tracer counts, this timer times, and fills the records' time columns after.

The tracer asks the timer for a clock mark before and after each call it handles (:meth:`OpTimer.start`,
:meth:`OpTimer.stop`; :meth:`OpTimer.count` when the call made more than one record). :meth:`OpTimer.fill`
turns them into ``time_s`` and ``start_s`` (seconds from :meth:`OpTimer.begin`); a call that made several
records (the three parts of one fused attention kernel) has its time split over them in proportion to their
FLOPs, and those records say so (``time_apportioned``).
"""

from __future__ import annotations

from diffprobe.records.schema import OpRecord
from diffprobe.timing.clock import Clock


class OpTimer:
    """Marks around every traced call on one :class:`Clock`; see the module docstring."""

    def __init__(self, device: str = "cpu"):
        self.clock = Clock(device)
        self.mark = self.clock.mark
        self.intervals: list[tuple[int, int, object, object]] = []  # (first record, records, start, end)
        self.origin = None
        self.summary: dict = {}  # nothing beyond the records' times (the profiler timer reports its join here)
        self.kernels: list[dict] = []  # no device events (the profiler timer's: each kernel)

    def begin(self) -> None:
        """Start of the traced region: ``start_s`` counts from here."""
        self.origin = self.mark()

    def end(self) -> None:
        """End of the traced region (nothing to stop: marks are read in :meth:`fill`)."""

    def start(self, first: int):
        """A mark before the call whose first record will be ``first``."""
        return self.mark()

    def stop(self, start, first: int) -> None:
        """A mark after that call (one record unless :meth:`count` says otherwise)."""
        self.intervals.append((first, 1, start, self.mark()))

    def count(self, first: int, n: int) -> None:
        """The call that began at record ``first`` made ``n`` records (the last interval is that call's)."""
        f, _, start, end = self.intervals[-1]
        self.intervals[-1] = (f, n, start, end)

    def fill(self, rows: list[OpRecord]) -> None:
        """Write ``time_s`` and ``start_s`` into ``rows`` (in place) for every interval, and forget them."""
        if not self.intervals:
            return
        clock = self.clock
        clock.sync()
        for first, n, start, end in self.intervals:
            assign(rows, first, n, clock.seconds(start, end), clock.seconds(self.origin, start))
        self.intervals.clear()


def assign(rows: list[OpRecord], first: int, n: int, secs: float, at: float) -> None:
    """Give the call that made records ``first`` … ``first + n - 1`` its ``secs``, starting at ``at``: one record
    takes it all; several (one fused kernel's parts) share it in proportion to their FLOPs, back to back, flagged
    ``time_apportioned``. A call interrupted (Ctrl-C, SIGTERM) before its records were written has none: skipped."""
    if first + n > len(rows):
        return
    if n == 1:
        rows[first] = rows[first]._replace(time_s=secs, start_s=at)
        return
    total = sum(r.flops for r in rows[first:first + n]) or 1
    for i in range(first, first + n):
        t = secs * rows[i].flops / total
        rows[i] = rows[i]._replace(time_s=t, start_s=at, time_apportioned=True)
        at += t
