"""Folders of points (sweeps, sparsity runs) and the one loop that fills them.

A point is a complete run folder under ``points/<name>/``. It is written under ``.partial/<name>/`` and renamed
into place when complete, so a killed run leaves only whole points and the same command resumes where it stopped;
a folder made with another configuration is refused rather than mixed, and a folder being written by another
process is refused (an ``flock`` on ``.lock``, which the OS releases if that process dies).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from diffprobe.errors import DiffprobeError, a
from diffprobe.records.documents import Document, RunDocument, SweepDocument, read_document
from diffprobe.records.runfolder import LOCK_NAME, lock_folder, release_folder, write_document


class SweepFolder:
    """A folder of points on disk (sweeps, sparsity runs): configuration check, finished points, atomic point
    commits. ``meta_name`` is the summary file; a point is finished when its ``run.json`` says ok and every file
    of ``required`` is there."""

    def __init__(self, path: str | Path, identity: dict, document: type[Document] = SweepDocument,
                 required: tuple[str, ...] = ()):
        if not str(path).strip():
            raise DiffprobeError("--out is empty; name a folder, or leave --out out for a new one under runs/")
        self.path = Path(path)
        self.identity = identity
        self.document = document
        self.meta_path = self.path / document.FILE
        self.required = required

    def open(self) -> dict:
        """Create the folder or check that it holds a sweep of the same configuration, and lock it for this
        process (released by :meth:`close`, or by the OS when the process dies); returns its state."""
        if self.path.exists() and not self.path.is_dir():
            raise DiffprobeError(f"--out {self.path} is a file, not a folder; name a new or empty folder")
        if not self.meta_path.exists() and self.path.exists() and any(
                p.name not in (".partial", LOCK_NAME) for p in self.path.iterdir()):
            raise DiffprobeError(f"--out {self.path} exists and is not {a(self.meta_path.stem)} folder; use an empty "
                                 "or new folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DiffprobeError(f"cannot write to --out {self.path}: {exc.strerror or exc}") from exc
        self._lock()
        if not self.meta_path.exists():
            return {}
        try:
            state = dict(read_document(self.meta_path, self.document))
        except DiffprobeError as exc:
            self.close()
            raise DiffprobeError(f"{exc}; start fresh with another --out or delete the folder") from exc
        old = state.get("config", {})
        diff = [k for k in sorted(set(old) | set(self.identity)) if old.get(k) != self.identity.get(k)]
        if diff:
            self.close()
            k = diff[0]
            raise DiffprobeError(
                f"folder {self.path} was made with another configuration ({k} {old.get(k)!r}, now "
                f"{self.identity.get(k)!r}); use another --out, or delete the folder to start fresh")
        return state

    def _lock(self) -> None:
        lock_folder(self.path)

    def close(self) -> None:
        """Release the folder's lock."""
        release_folder(self.path)

    def point_dir(self, name: str) -> Path:
        return self.path / "points" / name

    def finished(self, name: str) -> bool:
        run = self.point_dir(name) / "run.json"
        if not run.exists() or not all((self.point_dir(name) / f).exists() for f in self.required):
            return False
        try:
            return json.loads(run.read_text(encoding="utf-8")).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def partial_dir(self, name: str) -> Path:
        tmp = self.path / ".partial" / name
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a killed run: incomplete, so redone
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, name: str, tmp: Path) -> Path:
        final = self.point_dir(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        run = final / "run.json"
        if run.exists():  # the point's run.json names the folder it now lives in, not .partial/
            doc = read_document(run, RunDocument)
            doc.run_dir = str(final)
            write_document(final, doc)
        return final

    def save(self, state: dict) -> None:
        """Write the folder's document from ``state``, the mapping of its fields."""
        write_document(self.path, self.document.from_fields(state, str(self.meta_path)))


def run_points(folder: SweepFolder, names: list[str], work: Callable[[str, Path], None], progress, stage: str, *,
               skip: Callable[[str], bool] | None = None, on_done: Callable[[str], None] | None = None,
               on_error: Callable[[str, DiffprobeError], None] | None = None) -> None:
    """Fill ``folder`` with the points ``names``: a finished point is kept, ``skip(name)`` may pass over one,
    ``work(name, tmp)`` writes a point into its ``.partial`` folder, which is then committed (``on_done``). A
    :class:`DiffprobeError` from ``work`` goes to ``on_error`` (the loop goes on) or, without one, up.
    ``progress(stage, done, total)`` counts points."""
    for i, name in enumerate(names):
        progress(stage, i, len(names))
        if folder.finished(name):
            if on_done is not None:
                on_done(name)
            continue
        if skip is not None and skip(name):
            continue
        tmp = folder.partial_dir(name)
        try:
            work(name, tmp)
        except DiffprobeError as exc:
            if on_error is None:
                raise
            on_error(name, exc)
            continue
        folder.commit(name, tmp)
        if on_done is not None:
            on_done(name)
    progress(stage, len(names), len(names))
