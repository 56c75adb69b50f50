"""Where a folder of points lives: a local (or shared) path, or a URL that ``pyarrow.fs`` opens (``s3://``,
``gs://``, ``hdfs://``, ``file://``).

:class:`Store` is the one filesystem abstraction the point folders (sweeps, sparsity runs) are read and written
through, whichever executor fills them. A point is always written into a local staging folder first (a run writes
its files where it runs); committing it is a rename on a plain path (atomic) and, at a URL, an upload whose last
file is the point's ``run.json``: a point without it is not finished, so a reader never takes half a point for a
whole one and an interrupted upload is redone on resume. Object stores have no rename and no lock: a URL folder is
not locked against a second driver (say so in the docs, as :func:`Store.lock` does).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.records.runfolder import LOCK_NAME, atomic_write, lock_folder, release_folder

SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "file", "abfs", "abfss")


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names a filesystem by scheme (``s3://bucket/x``) rather than a plain path."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0].lower() in SCHEMES


def _scheme_error(location: str) -> DiffprobeError:
    scheme = location.split("://", 1)[0]
    return DiffprobeError(f"--out {location}: unknown scheme {scheme!r}; use a path or a URL pyarrow.fs opens "
                          f"({', '.join(s + '://' for s in SCHEMES)})")


class Store:
    """A folder at ``location`` (a path or a URL). ``filesystem``: a ``pyarrow.fs.FileSystem`` to use instead of
    the one the URL names (tests pass a mock; ``location`` is then the path inside it)."""

    def __init__(self, location: str | Path, filesystem=None):
        import pyarrow.fs as pafs

        text = str(location)
        if not text.strip():
            raise DiffprobeError("--out is empty; name a folder, or leave --out out for a new one under runs/")
        self.location = text
        if filesystem is not None:
            self.fs, self.root, self.local = filesystem, text.rstrip("/"), None
        elif is_url(text):
            try:
                self.fs, root = pafs.FileSystem.from_uri(text)
            except (ValueError, OSError) as exc:  # pyarrow: ArrowInvalid, or the filesystem's own error
                raise DiffprobeError(f"cannot open --out {text}: {exc}") from exc
            self.root, self.local = root.rstrip("/"), None
        elif "://" in text:
            raise _scheme_error(text)
        else:
            self.local = Path(text).absolute()
            self.fs, self.root = pafs.LocalFileSystem(), str(self.local)

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    def __getstate__(self):  # shipped to workers as its location: they open their own filesystem
        if self.local is None and not is_url(self.location):
            raise DiffprobeError(f"a folder on an in-memory filesystem ({self.location}) cannot be shared with "
                                 "workers: use a path or a URL")
        return {"location": str(self.local) if self.local is not None else self.location}

    def __setstate__(self, state):
        self.__init__(state["location"])

    # paths --------------------------------------------------------------------------------------------------
    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def url(self, rel: str = "") -> str:
        """What a reader is told: the local path, or the URL with ``rel`` joined."""
        if self.local is not None:
            return str(self.local / rel) if rel else str(self.local)
        return f"{self.location.rstrip('/')}/{rel}" if rel else self.location

    def _info(self, rel: str):
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path(rel))
        return None if info.type == pafs.FileType.NotFound else info

    def exists(self, rel: str = "") -> bool:
        return self._info(rel) is not None

    def is_dir(self, rel: str = "") -> bool:
        import pyarrow.fs as pafs

        info = self._info(rel)
        return info is not None and info.type == pafs.FileType.Directory

    def listdir(self, rel: str = "") -> list[str]:
        """Names in the folder ``rel`` (none when it does not exist), sorted."""
        import pyarrow.fs as pafs

        if not self.is_dir(rel):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), recursive=False))
        return sorted(i.base_name for i in infos)

    # files --------------------------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as fh:
            return fh.read()

    def read_json(self, rel: str) -> dict:
        return json.loads(self.read_bytes(rel).decode("utf-8"))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file whole: atomically on a path (a temporary file renamed), one object put at a URL."""
        if self.local is not None:
            target = self.local / rel
            target.parent.mkdir(parents=True, exist_ok=True)

            def write(tmp):
                Path(tmp).write_bytes(data)

            atomic_write(target, write)
            return
        parent = self.path(rel).rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        with self.fs.open_output_stream(self.path(rel)) as fh:
            fh.write(data)

    def read_table(self, rel: str):
        """A Parquet file as a pyarrow Table."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path(rel), filesystem=self.fs)

    def delete(self, rel: str) -> None:
        """Remove a file or folder (nothing when absent)."""
        import pyarrow.fs as pafs

        info = self._info(rel)
        if info is None:
            return
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))
        else:
            self.fs.delete_file(self.path(rel))

    def mkdir(self, rel: str = "") -> None:
        try:
            self.fs.create_dir(self.path(rel), recursive=True)
        except OSError as exc:
            raise DiffprobeError(f"cannot write to --out {self.url(rel)}: {exc}") from exc

    # folders of points ----------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the folder's lock for this process (a path: ``flock``, see
        :func:`~diffprobe.records.runfolder.lock_folder`); a URL has none (object stores offer no lock through
        pyarrow.fs): one driver per URL folder is the user's to keep."""
        if self.local is not None:
            lock_folder(self.local)

    def unlock(self) -> None:
        if self.local is not None:
            release_folder(self.local)

    def staging(self, name: str) -> Path:
        """A new, empty local folder to write point ``name`` into before :meth:`commit`: under ``.partial/`` of a
        path (so the commit is a rename), a temporary folder for a URL. Unique per call, so two attempts at one
        point never share one."""
        if self.local is not None:
            tmp = self.local / ".partial" / f"{name}.{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            return tmp
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"diffprobe-{name}-"))

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def commit(self, rel: str, staging: Path, last: str = "run.json") -> bool:
        """Move the staged folder to ``rel``, ``last`` (the file that marks the folder finished) last; a folder
        already finished there (another attempt's) is kept and the staged one dropped: returns whether it was
        written. A folder there without ``last`` (left by an interrupted commit) is replaced."""
        if self.exists(f"{rel}/{last}"):
            self.discard(staging)
            return False
        if self.local is not None:
            final = self.local / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            return True
        self.delete(rel)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.relative_to(staging).as_posix() == last)  # the marker last
        for p in files:
            self.write_bytes(f"{rel}/{p.relative_to(staging).as_posix()}", p.read_bytes())
        self.discard(staging)
        return True

    def clear_partial(self) -> None:
        """Remove what killed attempts left under ``.partial/`` (a path only: a URL stages locally)."""
        if self.local is not None:
            shutil.rmtree(self.local / ".partial", ignore_errors=True)

    def entries(self) -> list[str]:
        """The folder's own entries, its lock and staging area aside."""
        return [n for n in self.listdir() if n not in (".partial", LOCK_NAME)]

    def download(self, rel: str, dest: Path) -> Path:
        """Copy the folder ``rel`` (recursively) to the local folder ``dest``; returns ``dest``."""
        import pyarrow.fs as pafs

        dest.mkdir(parents=True, exist_ok=True)
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(rel), recursive=True))
        base = self.path(rel).rstrip("/") + "/"
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            target = dest / info.path[len(base):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(info.path) as fh:
                target.write_bytes(fh.read())
        return dest
