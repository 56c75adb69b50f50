"""Executors: the same points on a local Ray instance as in this process, resumable across executors, retried when a
worker dies, a failed point recorded beside good ones, folders at a pyarrow.fs URL, bad executor options refused."""

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffprobe.errors import DiffprobeError
from diffprobe.run.executor import Executor, run_jobs
from diffprobe.run.points import PointJob, SweepFolder
from diffprobe.run.profile import ProfileConfig
from diffprobe.run.sweep import SweepConfig, run_sweep
from tests.cli_checks import one_line_error

ray = pytest.importorskip("ray")
RAY = Executor(kind="ray", retries=2)


def _sweep(out, executor=Executor(), sides=(64, 128), **kw):
    base = ProfileConfig(**{"model": "tiny", "steps": 2, "mode": "analytic", **kw})
    return run_sweep(SweepConfig(base=base, resolutions=[(s, s) for s in sides], out=str(out), executor=executor))


def _points(folder) -> dict:
    return {p.name: (p / "ops.parquet").read_bytes() for p in sorted(Path(folder, "points").iterdir())}


@pytest.mark.slow
def test_ray_sweep_equals_the_local_one_byte_for_byte(tmp_path, local_ray):
    local, remote = _sweep(tmp_path / "local"), _sweep(tmp_path / "ray", RAY)
    assert _points(tmp_path / "local") == _points(tmp_path / "ray") and len(_points(tmp_path / "ray")) == 2
    assert remote["findings"] == local["findings"] and remote["complete"] and remote["status"] == "ok"
    run = json.loads((tmp_path / "ray" / "points" / "128x128-b1" / "run.json").read_text())
    assert run["run_dir"] == str(tmp_path / "ray" / "points" / "128x128-b1")  # where it lives, not its staging
    assert not (tmp_path / "ray" / ".partial").exists()


@pytest.mark.slow
def test_a_folder_resumes_across_executors(tmp_path, local_ray):
    out = tmp_path / "s"
    _sweep(out, sides=(64,))
    first = (out / "points" / "64x64-b1" / "run.json").stat().st_mtime_ns
    state = _sweep(out, RAY, sides=(64, 128))  # the local point kept, the new one run on Ray
    assert (out / "points" / "64x64-b1" / "run.json").stat().st_mtime_ns == first
    assert len(state["findings"]["points"]) == 2
    again = (out / "points" / "128x128-b1" / "run.json").stat().st_mtime_ns
    _sweep(out, sides=(64, 128))  # and back: nothing to do
    assert (out / "points" / "128x128-b1" / "run.json").stat().st_mtime_ns == again


def flaky(args, staging, cache):
    """A job (run in a Ray worker): ``bad`` fails for a reason of its own, ``oom`` runs out of memory, the others
    write a point."""
    name = args[0]
    if name == "bad":
        raise DiffprobeError("a size of its own that cannot run")
    if name == "oom":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
    (staging / "point.txt").write_text(name)


@pytest.mark.parametrize("executor", [Executor(), RAY], ids=["local", "ray"])
def test_a_failed_point_is_recorded_beside_good_ones(tmp_path, local_ray, executor):
    from diffprobe.records.documents import SweepDocument  # noqa: F401 (the folder's document)

    folder = SweepFolder(tmp_path / "f", {})
    folder.open()
    names = ["a", "bad", "b"] + (["oom"] if executor.kind == "ray" else [])
    done, failed = [], {}
    run_jobs(folder, [PointJob(n, flaky, (n,)) for n in names], executor, lambda *a: None, "points",
             on_done=lambda n, info: done.append(n), on_error=lambda n, exc, info: failed.update({n: str(exc)}))
    folder.close()
    assert sorted(done) == ["a", "b"] and failed["bad"] == "a size of its own that cannot run"
    if executor.kind == "ray":
        assert failed["oom"].startswith("out of memory (OutOfMemoryError: CUDA out of memory")
    assert sorted(p.name for p in (tmp_path / "f" / "points").iterdir()) == ["a", "b"]
    assert (tmp_path / "f" / "points" / "b" / "point.txt").read_text() == "b"


def _kill_first_worker(folder: Path, stop: threading.Event, killed: list) -> None:
    """Wait for a point's staging folder, then SIGKILL the Ray worker whose process title names that point."""
    while not stop.is_set() and not killed:
        for name in [p.name.split(".")[0] for p in (folder / ".partial").glob("*")]:
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                if title.startswith(f"ray::diffprobe-{name}"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(name)
                    return
        time.sleep(0.01)


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_every_point_written_once(tmp_path, local_ray):
    out = tmp_path / "m"
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_first_worker, args=(out, stop, killed))
    watcher.start()
    try:
        state = _sweep(out, RAY, sides=(64, 96, 128, 160), mode="measured", sample_steps=0)
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == 1, "no worker was killed: the points ran too fast to catch one"
    points = state["points"]
    assert sorted(points) == ["128x128-b1", "160x160-b1", "64x64-b1", "96x96-b1"]
    assert all(p["status"] == "ok" for p in points.values())
    victim = points[f"{killed[0]}"]
    assert victim["attempts"] == 2 and victim["retries"] == ["worker died (WorkerCrashedError)"]
    assert all("attempts" not in p for n, p in points.items() if n != killed[0])  # the others ran once
    assert sorted(p.name for p in (out / "points").iterdir()) == sorted(points)
    assert not (out / ".partial").exists() and len(state["findings"]["points"]) == 4


@pytest.mark.slow
def test_a_sweep_at_a_file_url_on_both_executors(tmp_path, local_ray):
    from diffprobe.report.html import build_report

    url = f"file://{tmp_path}/u"
    state = _sweep(url, RAY, sides=(64,))
    _sweep(url, sides=(64, 128))  # resumed through the URL by the local executor
    local = _sweep(tmp_path / "plain", sides=(64, 128))
    assert _points(tmp_path / "u") == _points(tmp_path / "plain")
    saved = json.loads((tmp_path / "u" / "sweep.json").read_text())
    assert saved["findings"] == local["findings"] and state["points"]["64x64-b1"]["status"] == "ok"
    run = json.loads((tmp_path / "u" / "points" / "64x64-b1" / "run.json").read_text())
    assert run["run_dir"] == f"{url}/points/64x64-b1"
    assert build_report(url) == f"{url}/report.html" and (tmp_path / "u" / "report.html").stat().st_size > 1000


def test_a_url_folder_commits_its_run_json_last(tmp_path):
    """On a filesystem without rename (pyarrow's mock), a point is uploaded with run.json last: a reader that sees
    run.json sees every file of the point."""
    import pyarrow.fs as pafs

    from diffprobe.records.storage import Store

    fs = pafs._MockFileSystem()
    store = Store("bucket/s", filesystem=fs)
    written = []
    real = store.write_bytes
    store.write_bytes = lambda rel, data: (written.append(rel), real(rel, data))
    staging = tmp_path / "stage"
    (staging / "sub").mkdir(parents=True)
    for f in ("run.json", "ops.parquet", "sub/x.json", "z.png"):
        (staging / f).write_text(f)
    assert store.commit("points/p", staging) and written[-1] == "points/p/run.json" and len(written) == 4
    assert store.read_bytes("points/p/sub/x.json") == b"sub/x.json" and not staging.exists()
    again = tmp_path / "again"
    again.mkdir()
    (again / "run.json").write_text("second")
    assert not store.commit("points/p", again)  # already finished: nothing written twice
    assert store.read_bytes("points/p/run.json") == b"run.json"


@pytest.mark.parametrize("argv, needle", [
    (["--executor", "spark"], "--executor 'spark' is not one of local, ray"),
    (["--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["--executor", "ray", "--ray-address", "not an address"], "is not 'auto' or HOST:PORT"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:9"], "no Ray head answers there"),
    (["--executor", "ray", "--retries", "-1"], "--retries must be 0 or more"),
    (["--executor", "ray", "--gpus-per-point", "0"], "--gpus-per-point must be in (0, 8]"),
    (["--out", "ftp://host/x"], "unknown scheme 'ftp'"),
])
def test_bad_executor_options_are_one_line(capsys, tmp_path, argv, needle):
    if "--out" not in argv:
        argv = argv + ["--out", str(tmp_path / "s")]
    one_line_error(capsys, ["sweep", "--model", "tiny", "--resolutions", "64", *argv], needle)
    one_line_error(capsys, ["sparsity", "--resolutions", "64", *argv], needle)


def test_resources_per_point():
    assert Executor().resources("cuda", analytic=False) == {"num_cpus": 1, "num_gpus": 1}
    assert Executor(gpus_per_point=0.5).resources("cuda:1", analytic=False)["num_gpus"] == 0.5  # two points a GPU
    assert Executor().resources("cpu", analytic=True) == {"num_cpus": 1, "num_gpus": 0}  # one Python thread
    assert Executor().resources("cpu", analytic=False)["num_cpus"] == torch.get_num_threads()
    assert Executor(cpus_per_point=3).resources("cpu", analytic=False)["num_cpus"] == 3


@pytest.mark.slow
def test_sparsity_on_ray_equals_the_local_one(tmp_path, local_ray):
    import pandas as pd

    from diffprobe.attention.probe import SparsityConfig
    from diffprobe.run.sparsity import run_sparsity

    base = ProfileConfig(model="digits", steps=2, sample_steps=0, trace_ops=False)
    sc = SparsityConfig(eps=(0.01,), taus=(0.9,), blocks=(8,), save_masks=True)
    local = run_sparsity(base, [(32, 32), (48, 48)], sc, tmp_path / "l")
    remote = run_sparsity(base, [(32, 32), (48, 48)], sc, f"file://{tmp_path}/r", executor=RAY)
    assert remote["summary"] == local["summary"] and remote["mask_step_overlap"] == local["mask_step_overlap"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "l" / "sparsity.parquet"),
                                  pd.read_parquet(tmp_path / "r" / "sparsity.parquet"))


@pytest.mark.slow
def test_ctrl_c_cancels_the_ray_tasks_and_keeps_every_finished_point(tmp_path, local_ray):
    """Ctrl-C in the driver (a KeyboardInterrupt, as the command gets it) once a point is in, the others still out:
    every task cancelled, the finished point kept whole, the folder resumable."""
    out = tmp_path / "s"
    base = ProfileConfig(model="tiny", steps=2, mode="measured", sample_steps=0)
    sc = SweepConfig(base=base, resolutions=[(64, 64), (96, 96), (128, 128), (160, 160)], out=str(out),
                     executor=Executor(kind="ray", cpus_per_point=2))  # one point at a time on two CPUs

    def ctrl_c(stage, done, total, detail=None):
        if done >= 1 and detail and "out on Ray" in detail:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sc, progress=ctrl_c)
    state = json.loads((out / "sweep.json").read_text())
    assert state["status"] == "interrupted" and not state["complete"]
    kept = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/run.json")}
    assert 1 <= len(kept) < 4 and not list(out.glob(".partial/*"))
    assert all(json.loads((out / "points" / n / "run.json").read_text())["status"] == "ok" for n in kept)
    time.sleep(1)
    titles = [Path(f"/proc/{p}/cmdline").read_bytes() for p in os.listdir("/proc") if p.isdigit()
              and Path(f"/proc/{p}/cmdline").exists()]
    assert not [t for t in titles if t.startswith(b"ray::diffprobe-")]  # no task of the sweep still running
    state = run_sweep(replace(sc, executor=Executor()))  # resumed here: the finished points kept as they were
    assert {n: (out / "points" / n / "run.json").stat().st_mtime_ns for n in kept} == kept and state["complete"]
