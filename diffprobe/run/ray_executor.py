"""The Ray executor: each point a Ray task, built and written where it runs.

A task receives the folder (its location: a shared path or a URL) and its :class:`~diffprobe.run.points.PointJob`,
builds its model inside the worker (a worker keeps its last pipeline for its next point of the same model), writes
the point into a staging folder and commits it whole; it returns the outcome instead of raising, so a point that
fails for a reason of its own (a bad size, out of memory) is recorded with its one line and the others go on. A
task whose worker dies (killed, its node lost) is submitted again, at most ``retries`` times, and the retry is
recorded. Ctrl-C (or SIGTERM) cancels every task still out; finished points stay, and an attempt that finds its
point already committed writes nothing (nothing is written twice).
"""

from __future__ import annotations

import logging
import os
import socket

from diffprobe.errors import DiffprobeError

_CACHE: dict = {}  # a worker's pipelines, kept between its tasks


def point_task(folder, job) -> dict:
    """Run one point in a Ray worker; returns ``{"status": "ok" | "present" | "failed", ...}``."""
    import torch

    worker = f"{socket.gethostname()}:{os.getpid()}"
    if folder.finished(job.name):  # an earlier attempt committed it before its worker died
        return {"status": "present", "worker": worker}
    if job.num_gpus == 0 and job.num_cpus >= 1:
        torch.set_num_threads(int(job.num_cpus))
    staging = folder.store.staging(job.name)
    try:
        job.run(staging, _CACHE)
    except DiffprobeError as exc:
        return _failed(folder, staging, str(exc), worker)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        _CACHE.clear()
        return _failed(folder, staging, f"out of memory ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                       worker)
    except Exception as exc:  # noqa: BLE001 - a point's own failure, recorded in one line; the others go on
        first = (str(exc).splitlines() or [""])[0][:300]
        return _failed(folder, staging, f"{type(exc).__name__}: {first}", worker)
    except BaseException:
        folder.store.discard(staging)
        raise
    written = folder.commit(job.name, staging)
    return {"status": "ok" if written else "present", "worker": worker}


def _failed(folder, staging, message: str, worker: str) -> dict:
    folder.store.discard(staging)
    return {"status": "failed", "message": message, "worker": worker}


def connect(address: str | None) -> bool:
    """Connect this process to Ray: a new local instance (``address`` None), the machine's cluster (``auto``) or
    ``HOST:PORT``; an instance already connected is used as it is. Returns whether this call started it (then
    :func:`disconnect` stops it)."""
    try:
        import ray
    except ImportError:
        raise DiffprobeError("--executor ray needs the ray package: pip install 'ray>=2.40'") from None
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise DiffprobeError(f"cannot start or join Ray (--ray-address {address or 'a local instance'}): "
                             f"{first}") from None
    return True


def disconnect(started: bool) -> None:
    if started:
        import ray

        ray.shutdown()


def _check_fits(jobs: list) -> None:
    """Refuse a request no node can meet (Ray would wait for it forever)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for key, unit in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
        want = max(getattr(j, key) for j in jobs)
        have = max((n.get(unit, 0) for n in nodes), default=0)
        if want > have:
            raise DiffprobeError(f"each point asks for {want:g} {unit}, and no node of the Ray cluster has more than "
                                 f"{have:g}: lower --{'cpus' if unit == 'CPU' else 'gpus'}-per-point")


def run_on_ray(folder, todo: list, executor, progress, stage: str, total: int, done, on_error, log) -> None:
    """Run ``todo`` as Ray tasks (see :func:`diffprobe.run.executor.run_jobs`)."""
    say = log or (lambda _m: None)
    started = connect(executor.address)
    try:
        _check_fits(todo)
        _drive(folder, todo, executor, progress, stage, total, done, on_error, say)
    finally:
        disconnect(started)


def _outcome(ref) -> tuple[str, dict | str]:
    """A finished task's outcome: ``("result", dict)``, ``("oom", message)`` or ``("died", reason)``."""
    import ray
    import ray.exceptions as rex

    try:
        return "result", ray.get(ref)
    except rex.OutOfMemoryError as exc:
        return "oom", (f"out of memory (Ray's memory monitor stopped its worker: "
                       f"{(str(exc).splitlines() or [''])[0][:160]})")
    except (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError,
            rex.RaySystemError) as exc:
        return "died", f"worker died ({type(exc).__name__})"


def _drive(folder, todo, executor, progress, stage, total, done, on_error, say) -> None:
    import ray

    task = ray.remote(point_task)
    attempts = {j.name: 0 for j in todo}
    retries: dict[str, list[str]] = {j.name: [] for j in todo}

    def submit(job):
        attempts[job.name] += 1
        return task.options(num_cpus=job.num_cpus, num_gpus=job.num_gpus, max_retries=0,
                            name=f"diffprobe-{job.name}").remote(folder, job)

    def info(name: str, res: dict | None = None) -> dict:
        out = {"attempts": attempts[name], "executor": "ray", **({"retries": list(retries[name])} if retries[name]
                                                                 else {})}
        return {**out, "worker": res["worker"]} if res and res.get("worker") else out

    def fail(name: str, message: str, res=None) -> None:
        if on_error is None:
            raise DiffprobeError(message)
        on_error(name, DiffprobeError(message), info(name, res))

    pending = {submit(job): job for job in todo}
    count = total - len(todo)
    try:
        while pending:
            retried = sum(map(len, retries.values()))
            progress(stage, count, total, f"{len(pending)} out on Ray" + (f", {retried} retried" if retried else ""))
            for ref in ray.wait(list(pending), num_returns=1, timeout=1.0)[0]:
                job = pending.pop(ref)
                kind, res = _outcome(ref)
                if kind == "died":
                    retries[job.name].append(res)
                    if len(retries[job.name]) <= executor.retries:
                        say(f"point {job.name}: its {res}; running it again "
                            f"({len(retries[job.name])} of {executor.retries} retries)")
                        pending[submit(job)] = job
                        continue
                    res = f"its worker died {len(retries[job.name])} times (--retries {executor.retries})"
                count += 1
                if kind != "result" or res["status"] == "failed":
                    fail(job.name, res if isinstance(res, str) else res["message"], res if kind == "result" else None)
                else:
                    done(job.name, info(job.name, res))
    except BaseException:  # Ctrl-C, SIGTERM or a failure without on_error: nothing more runs
        for ref in pending:
            ray.cancel(ref, force=True)
        try:  # until the cancelled tasks have ended: none writes a staging folder after the driver cleans up
            ray.wait(list(pending), num_returns=len(pending), timeout=10)
        except Exception:  # noqa: BLE001 - cleaning up after an interruption; the interruption is what goes up
            pass
        raise
    progress(stage, total, total, "done")
