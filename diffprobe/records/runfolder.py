"""The run folder: ``run.json`` (written atomically) and its readers."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_run_json(folder: str | Path, data: dict) -> Path:
    """Write ``run.json`` atomically, so a reader never sees half a file."""
    folder = Path(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".run.json.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
    final = folder / "run.json"
    os.replace(tmp, final)
    return final


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
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ops.parquet.")
    os.close(fd)
    pq.write_table(table, tmp)
    final = folder / "ops.parquet"
    os.replace(tmp, final)
    return final


def read_ops(folder: str | Path):
    """The op-record table of a run folder (pandas DataFrame)."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(folder) / "ops.parquet").to_pandas()
