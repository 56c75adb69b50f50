"""Folders of points (sweeps, sparsity runs) and the one loop that fills them.

A point is a complete run folder under ``points/<name>/``, written by a :class:`PointJob` into a staging folder and
committed whole (:class:`~diffprobe.records.storage.Store`: a rename on a path, an upload with ``run.json`` last at
a URL), so a killed run leaves only whole points and the same command resumes where it stopped, with either
executor (:mod:`diffprobe.run.executor`). A folder made with another configuration is refused rather than mixed, and
a folder being written by another process is refused (an ``flock`` on ``.lock``, which the OS releases if that
process dies; a URL folder has no lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from diffprobe.errors import DiffprobeError, a
from diffprobe.records.documents import Document, RunDocument, SweepDocument
from diffprobe.records.runfolder import dumps
from diffprobe.records.storage import Store


class SweepFolder:
    """A folder of points (sweeps, sparsity runs) at a path or URL: configuration check, finished points, atomic
    point commits. ``document`` names the summary file; a point is finished when its ``run.json`` says ok and every
    file of ``required`` is there."""

    def __init__(self, location: str | Path | Store, identity: dict, document: type[Document] = SweepDocument,
                 required: tuple[str, ...] = ()):
        self.store = location if isinstance(location, Store) else Store(location)
        self.identity = identity
        self.document = document
        self.required = required

    @property
    def url(self) -> str:
        return self.store.url()

    def open(self) -> dict:
        """Create the folder or check that it holds a sweep of the same configuration, and lock it for this
        process (released by :meth:`close`, or by the OS when the process dies); returns its state."""
        store, meta = self.store, self.document.FILE
        if store.exists() and not store.is_dir():
            raise DiffprobeError(f"--out {store.url()} is a file, not a folder; name a new or empty folder")
        if not store.exists(meta) and store.entries():
            raise DiffprobeError(f"--out {store.url()} exists and is not {a(Path(meta).stem)} folder; use an empty "
                                 "or new folder")
        store.mkdir()
        store.lock()
        if not store.exists(meta):
            return {}
        try:
            try:
                data = store.read_json(meta)
            except (OSError, ValueError) as exc:
                raise DiffprobeError(f"{store.url(meta)} is unreadable (half-written or damaged): {exc}") from exc
            state = dict(self.document.from_json(data, store.url(meta)))
        except DiffprobeError as exc:
            self.close()
            raise DiffprobeError(f"{exc}; start fresh with another --out or delete the folder") from exc
        old = state.get("config", {})
        diff = [k for k in sorted(set(old) | set(self.identity)) if old.get(k) != self.identity.get(k)]
        if diff:
            self.close()
            k = diff[0]
            raise DiffprobeError(
                f"folder {store.url()} was made with another configuration ({k} {old.get(k)!r}, now "
                f"{self.identity.get(k)!r}); use another --out, or delete the folder to start fresh")
        return state

    def close(self) -> None:
        """Release the folder's lock."""
        self.store.unlock()

    def finished(self, name: str) -> bool:
        rel = f"points/{name}"
        if not self.store.exists(f"{rel}/run.json") or not all(self.store.exists(f"{rel}/{f}") for f in self.required):
            return False
        try:
            return self.store.read_json(f"{rel}/run.json").get("status") == "ok"
        except (OSError, ValueError):
            return False

    def commit(self, name: str, staging: Path) -> bool:
        """Commit a point written into ``staging`` (:meth:`Store.staging`): its ``run.json`` first names the folder
        it will live in, then the folder moves (``run.json`` last). False: another attempt had already written it,
        and this one is dropped (nothing is written twice)."""
        run = staging / "run.json"
        if run.exists():
            from diffprobe.records.documents import read_document

            doc = read_document(run, RunDocument)
            doc.run_dir = self.store.url(f"points/{name}")
            run.write_text(dumps(doc.to_json()) + "\n", encoding="utf-8")
        return self.store.commit(f"points/{name}", staging)

    def save(self, state: dict) -> None:
        """Write the folder's document from ``state``, the mapping of its fields."""
        doc = self.document.from_fields(state, self.store.url(self.document.FILE))
        self.store.write_bytes(self.document.FILE, (dumps(doc.to_json()) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class PointJob:
    """One point: ``fn(args, staging, cache)`` writes it into ``staging``. ``fn`` is a module-level function and
    ``args`` plain configuration, so the job travels to a worker, which builds the model itself (``cache``: the
    worker's pipelines, reused by its next points of the same model); a :class:`DiffprobeError` is the point's own
    failure."""

    name: str
    fn: Callable
    args: tuple
    num_cpus: float = 1
    num_gpus: float = 0

    def run(self, staging: Path, cache: dict) -> None:
        self.fn(self.args, staging, cache)


def cached_pipeline(cache: dict, cfg, key_exclude=("height", "width", "batch", "frames", "out", "force")):
    """The pipeline of ``cfg`` (a ProfileConfig) from ``cache`` or built into it; its weights do not depend on the
    point's size, so one pipeline serves every point of a folder. One pipeline at a time is kept."""
    from dataclasses import asdict

    from diffprobe.models.registry import get_spec
    from diffprobe.run.profile import build_pipeline

    key = repr(sorted((k, v) for k, v in asdict(cfg).items() if k not in key_exclude))
    if key not in cache:
        cache.clear()
        cache[key] = build_pipeline(cfg, get_spec(cfg.model))
    return cache[key]
