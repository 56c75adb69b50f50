"""The one clock every diffprobe timing uses: ``time.perf_counter`` on the CPU, CUDA events on a GPU.

A mark is cheap and never synchronizes: CUDA events are read (once, after the run) by :meth:`Clock.seconds`
after :meth:`Clock.sync`, so timing inserts no synchronization inside the timed work.
"""

from __future__ import annotations

import time


class Clock:
    """``mark()`` a point in time, ``seconds(a, b)`` between two marks (after ``sync()`` on CUDA)."""

    def __init__(self, device: str = "cpu"):
        self.cuda = str(device).startswith("cuda")
        if self.cuda:
            import torch

            self._torch = torch
            self.mark = self._cuda_mark
        else:
            self.mark = time.perf_counter  # the hot path of per-op timing: no wrapper call

    def _cuda_mark(self):
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def seconds(self, start, end) -> float:
        """Seconds from mark ``start`` to mark ``end``."""
        if self.cuda:
            return start.elapsed_time(end) / 1e3
        return end - start

    def sync(self) -> None:
        """Wait for the device, so that every CUDA mark so far can be read."""
        if self.cuda:
            self._torch.cuda.synchronize()

    def time(self, fn) -> float:
        """Seconds one call of ``fn()`` takes (synchronized on CUDA)."""
        start = self.mark()
        fn()
        end = self.mark()
        self.sync()
        return self.seconds(start, end)

    def best_of(self, fn, repeats: int) -> float:
        """The fastest of ``repeats`` timed calls of ``fn()``, after one untimed warm-up call."""
        fn()
        return min(self.time(fn) for _ in range(repeats))
