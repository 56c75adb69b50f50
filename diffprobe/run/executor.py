"""Executors: who runs the points of a folder (sweeps, sparsity runs, approximation settings).

``local`` runs them one after another in this process (one pipeline serves them all); ``ray`` makes each point a
Ray task (:mod:`diffprobe.run.ray_executor`) on a local instance or a cluster. Either way the folder
(:class:`~diffprobe.run.points.SweepFolder`) is the single source of truth: the driver holds its lock, skips points
already finished (so a folder resumes with either executor), records each point's outcome and writes the findings;
every point is committed whole, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from diffprobe.errors import DiffprobeError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    """``kind``: local or ray. ``address`` (ray): None starts a local Ray instance on this machine; ``auto`` joins
    the cluster this machine belongs to; ``HOST:PORT`` (or ``ray://HOST:PORT``) joins that one. ``retries``: times a
    point whose worker died is run again. ``gpus_per_point``: GPUs each CUDA point asks for (fractions share one);
    ``cpus_per_point``: CPUs each point asks for (default: the threads a measured CPU point uses, one for an
    analytic point, which runs on one thread)."""

    kind: str = "local"
    address: str | None = None
    retries: int = 2
    gpus_per_point: float | None = None
    cpus_per_point: float | None = None

    def check(self) -> "Executor":
        if self.kind not in EXECUTORS:
            raise DiffprobeError(f"--executor {self.kind!r} is not one of {', '.join(EXECUTORS)}")
        if self.kind == "local" and self.address is not None:
            raise DiffprobeError("--ray-address needs --executor ray")
        if self.address is not None:
            probe_address(self.address)  # a Ray head left unanswered waits minutes: refused before any work
        if self.retries < 0:
            raise DiffprobeError(f"--retries must be 0 or more, got {self.retries}")
        if self.gpus_per_point is not None and not 0 < self.gpus_per_point <= 8:
            raise DiffprobeError(f"--gpus-per-point must be in (0, 8], got {self.gpus_per_point:g}")
        if self.cpus_per_point is not None and not 0 < self.cpus_per_point <= 1024:
            raise DiffprobeError(f"--cpus-per-point must be in (0, 1024], got {self.cpus_per_point:g}")
        return self

    def resources(self, device: str, analytic: bool) -> dict:
        """A point's Ray resource request on ``device``."""
        import torch

        if device.startswith("cuda"):
            return {"num_cpus": self.cpus_per_point or 1, "num_gpus": self.gpus_per_point or 1}
        cpus = self.cpus_per_point or (1 if analytic else torch.get_num_threads())
        return {"num_cpus": cpus, "num_gpus": 0}


_ADDRESS = re.compile(r"^(ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")


def check_address(address: str) -> tuple[str, int] | None:
    """``auto``, or a ``HOST:PORT`` that answers (a Ray head left unanswered waits minutes, so it is probed first):
    the host and port, None for ``auto``."""
    if address == "auto":
        return None
    m = _ADDRESS.match(address.strip())
    if not m or not 0 < int(m.group(3)) < 65536:
        raise DiffprobeError(f"--ray-address {address!r} is not 'auto' or HOST:PORT (e.g. 10.0.0.5:6379)")
    return m.group(2).strip("[]"), int(m.group(3))


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` nothing listens on, in one line."""
    import socket

    where = check_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=timeout):
            pass
    except OSError as exc:
        raise DiffprobeError(f"--ray-address {address}: no Ray head answers there ({exc.strerror or exc}); start "
                             "one with `ray start --head`, or leave --ray-address out for a local instance") from None


def run_jobs(folder, jobs: list, executor: Executor, progress, stage: str, *,
             skip: Callable[[str], bool] | None = None, on_done: Callable[..., None] | None = None,
             on_error: Callable[..., None] | None = None, log: Callable[[str], None] | None = None) -> None:
    """Fill ``folder`` with the points of ``jobs`` (:class:`~diffprobe.run.points.PointJob`) on ``executor``: a
    finished point is kept, ``skip(name)`` may pass over one (asked in the driver), each other job writes its point,
    which is committed. ``on_done(name, info)`` after each point present (``info``: attempts, retries, worker),
    ``on_error(name, exc, info)`` for a point that failed for a reason of its own (the others go on; without
    ``on_error`` the error goes up). ``progress(stage, done, total)`` counts points."""
    done = on_done or (lambda *_: None)
    todo = []
    for job in jobs:
        if folder.finished(job.name):
            done(job.name, {})
        elif skip is None or not skip(job.name):
            todo.append(job)
    if executor.kind == "ray" and todo:
        from diffprobe.run.ray_executor import run_on_ray

        run_on_ray(folder, todo, executor, progress, stage, len(jobs), done, on_error, log)
        return
    _run_local(folder, todo, progress, stage, len(jobs), done, on_error)


def _run_local(folder, todo: list, progress, stage: str, total: int, done, on_error) -> None:
    cache: dict = {}  # one pipeline serves every point
    first = total - len(todo)
    try:
        for i, job in enumerate(todo):
            progress(stage, first + i, total)
            staging = folder.store.staging(job.name)
            try:
                job.run(staging, cache)
            except DiffprobeError as exc:
                folder.store.discard(staging)
                if on_error is None:
                    raise
                on_error(job.name, exc, {"attempts": 1})
                continue
            except BaseException:
                folder.store.discard(staging)
                raise
            folder.commit(job.name, staging)
            done(job.name, {"attempts": 1})
    finally:
        cache.clear()
    progress(stage, total, total)
