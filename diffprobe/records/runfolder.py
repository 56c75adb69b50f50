"""The run folder: ``run.json`` (written atomically) and its readers."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


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


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")

    return atomic_write(path, write)


def write_run_json(folder: str | Path, data: dict) -> Path:
    """Write ``run.json`` atomically, so a reader never sees half a file."""
    return write_json(Path(folder) / "run.json", data)


def write_ops(folder: str | Path, ops) -> Path:
    """Write the op-record table as ``ops.parquet`` (schema version in the file's metadata), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from diffprobe.records.schema import SCHEMA_VERSION

    folder = Path(folder)
    table = pa.Table.from_pandas(ops, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"diffprobe_schema_version"] = str(SCHEMA_VERSION).encode()
    table = table.replace_schema_metadata(meta)
    return atomic_write(folder / "ops.parquet", lambda tmp: pq.write_table(table, tmp))


def read_ops(folder: str | Path):
    """The op-record table of a run folder (pandas DataFrame)."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(folder) / "ops.parquet").to_pandas()
