"""The run folder: ``run.json`` (written atomically) and its readers."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.records.documents import Document, read_document
from diffprobe.records.schema import OPS_ARROW, OPS_VERSION


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write) -> Path:
    """Create ``path`` atomically: ``write(tmp_path)`` fills a temporary file in the same folder, which then
    replaces ``path`` (a reader never sees half a file; an interrupted write leaves the old file or none)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


RESULT_FILES = ("sweep.json", "compare.json", "sparsity.json", "approx.json", "run.json")
LOCK_NAME = ".lock"  # flock'ed while a diffprobe process writes the folder
_held: dict[str, object] = {}  # folder -> the open lock file this process holds


def lock_folder(path: Path) -> None:
    """Take ``path``'s lock (an exclusive ``flock`` on ``path/.lock``) for the rest of this process, or until
    :func:`release_folder`; the OS releases it when the process ends, however it ends, so no stale lock is left. A
    folder another run holds, in this process or another, is refused with one line (two runs on one ``--out`` never
    share it)."""
    import fcntl

    key = str(Path(path).resolve())
    try:
        fh = open(Path(path) / LOCK_NAME, "a")
    except OSError as exc:
        raise DiffprobeError(f"cannot write to --out {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise DiffprobeError(f"--out {path} is in use by another diffprobe run; wait for it to finish or choose "
                             "another --out") from None
    _held[key] = fh


def release_folder(path: Path) -> None:
    """Release a lock :func:`lock_folder` took (closing the file releases the flock)."""
    fh = _held.pop(str(Path(path).resolve()), None)
    if fh is not None:
        fh.close()


def prepare_out_dir(out: str | Path | None, name: str, force: bool = False) -> Path:
    """Create the output folder and prove it writable before any heavy work.

    ``out=None``: a new ``runs/<time>-<name>`` folder (``-2``, ``-3``, ... when two runs start in the same
    second). A given ``out`` must be new or empty; ``force`` replaces the diffprobe results in it (every file in
    it is removed first, so none of the old run's files is left beside the new one), never a folder of other
    files."""
    import datetime
    import shutil

    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        for i in range(1, 1000):
            path = Path("runs") / (f"{stamp}-{name}" + (f"-{i}" if i > 1 else ""))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()  # atomic: no other run can make the same new folder
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise DiffprobeError(f"cannot write to {path}: {exc.strerror or exc}") from exc
        return _check_writable(path)
    if not str(out).strip():
        raise DiffprobeError("--out is empty; name a folder, or leave --out out for runs/<time>-<model>")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DiffprobeError(f"--out {path} is a file, not a folder; name a new or empty folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffprobeError(f"cannot write to --out {path}: {exc.strerror or exc}") from exc
    _check_replaceable(path, force)  # before the lock file: a folder of the user's own is left untouched
    lock_folder(path)  # claimed, then checked again: two runs started together on one new folder never share it
    try:
        _check_replaceable(path, force)
        if force:
            for child in path.iterdir():
                if child.name != LOCK_NAME:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        return _check_writable(path)
    except BaseException:
        release_folder(path)
        raise


def _check_replaceable(path: Path, force: bool) -> None:
    """Refuse a non-empty ``--out`` without ``force``, and one that holds files diffprobe did not write."""
    if any(p.name != LOCK_NAME for p in path.iterdir()):
        if not force:
            raise DiffprobeError(f"--out {path} is not empty; choose a new folder, or pass --force to replace the "
                                 "diffprobe results in it")
        if not any((path / f).is_file() for f in RESULT_FILES):
            raise DiffprobeError(f"--out {path} holds files diffprobe did not write; --force replaces only a "
                                 "diffprobe folder: choose a new folder")


def _check_writable(path: Path) -> Path:
    try:
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DiffprobeError(f"cannot write to --out {path}: {exc.strerror or exc}") from exc
    return path


def standard(x):
    """``x`` as standard JSON values: NaN and ±Infinity become ``null`` (JSON has neither), numpy scalars and
    arrays become Python numbers and lists, tuples become lists; anything else unknown becomes its ``str``."""
    import math

    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, bool, int)):
        return x
    if isinstance(x, Mapping):  # dicts and documents
        return {str(k): standard(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [standard(v) for v in x]
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return standard(x.tolist())
    return str(x)


def dumps(data, indent: int | None = 2) -> str:
    """Standard JSON text of ``data`` (see :func:`standard`)."""
    return json.dumps(standard(data), indent=indent, allow_nan=False)


def write_json(path: str | Path, data: dict | Document) -> Path:
    """Write ``data`` (a document: its JSON form) as indented standard JSON to ``path``, atomically."""
    text = dumps(data)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")

    return atomic_write(path, write)


def write_document(folder: str | Path, doc: Document) -> Path:
    """Write ``doc`` into ``folder`` under its file name (``run.json``, ``sweep.json``, ...), atomically, so a reader
    never sees half a file."""
    return write_json(Path(folder) / doc.FILE, doc.to_json())


def write_ops(folder: str | Path, ops, name: str = "ops.parquet") -> Path:
    """Write the op-record table as ``ops.parquet`` (or ``name``) in the record schema
    (:data:`~diffprobe.records.schema.OPS_ARROW`,
    its version in the file's metadata), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(ops, schema=OPS_ARROW, preserve_index=False)
    table = table.replace_schema_metadata({b"diffprobe_schema_version": str(OPS_VERSION).encode()})
    return atomic_write(Path(folder) / name, lambda tmp: pq.write_table(table, tmp))


def read_ops(folder: str | Path):
    """The op-record table of a run folder (pandas DataFrame, shapes as lists as the tracer made them); a table
    of another schema version is a :class:`DiffprobeError`."""
    import pyarrow.parquet as pq

    path = Path(folder) / "ops.parquet"
    return ops_frame(pq.read_table(path), path)


def ops_frame(table, path):
    """The records of an ``ops.parquet`` table read from ``path`` (a path or URL, named in errors), version
    checked."""
    _check_ops_version(path, table.schema)
    frame = table.drop_columns(["input_shapes", "output_shapes"]).to_pandas()
    for col in ("input_shapes", "output_shapes"):  # plain lists, not numpy arrays of arrays
        frame.insert(table.schema.get_field_index(col), col, table.column(col).to_pylist())
    return frame


def _check_ops_version(path: Path, schema) -> None:
    version = (schema.metadata or {}).get(b"diffprobe_schema_version", b"?").decode()
    if version != str(OPS_VERSION):
        raise DiffprobeError(f"{path} has record schema version {version}; this diffprobe reads version "
                             f"{OPS_VERSION}: re-run the command that made it")


def read_result(folder: str | Path) -> tuple[str, Document]:
    """The kind (``profile``, ``sweep``, ``compare``, ...) and document of a diffprobe folder, validated.

    Raises :class:`DiffprobeError` with one clear sentence for a missing, foreign, half-written or older folder."""

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DiffprobeError(f"{folder} is a file, not a run folder (give the folder that holds run.json, "
                             "sweep.json, ...)")
    if not folder.is_dir():
        raise DiffprobeError(f"run folder {folder} does not exist")
    for name in RESULT_FILES:
        path = folder / name
        if path.exists():
            break
    else:
        raise DiffprobeError(f"{folder} is not a diffprobe run folder (no run.json, sweep.json, sparsity.json, "
                             "approx.json or compare.json)")
    doc = read_document(path)
    ops = folder / "ops.parquet"
    if ops.exists():  # the record table beside it: its own version, checked from the file's schema alone
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(ops)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise DiffprobeError(f"{ops} is unreadable: {type(exc).__name__}: {exc}") from exc
        _check_ops_version(ops, schema)
    return doc.KIND, doc


def read_ops_checked(folder: str | Path):
    """:func:`read_ops`, or None when the run has no op table; a damaged table is a :class:`DiffprobeError`."""

    path = Path(folder) / "ops.parquet"
    if not path.exists():
        return None
    try:
        return read_ops(folder)
    except DiffprobeError:
        raise
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DiffprobeError(f"{path} is unreadable: {type(exc).__name__}: {exc}") from exc


def write_table(path: str | Path, table) -> Path:
    """Write a pandas DataFrame as Parquet, atomically."""
    return atomic_write(Path(path), lambda tmp: table.to_parquet(tmp, index=False))
