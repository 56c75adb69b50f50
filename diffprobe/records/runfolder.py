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
