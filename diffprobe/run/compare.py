"""``diffprobe compare``: several run folders of one kind side by side (:mod:`diffprobe.analyses.compare`), written
as ``compare.json`` and ``comparison.parquet`` into a folder of their own."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from diffprobe.analyses.compare import compare, rows
from diffprobe.errors import DiffprobeError
from diffprobe.records.documents import CompareDocument
from diffprobe.records.runfolder import atomic_write, prepare_out_dir, read_result, release_folder, write_document
from diffprobe.run.sweep import current_findings


def compare_runs(folders: list[str | Path], out: str | Path | None = None, force: bool = False) -> CompareDocument:
    """Compare run folders into ``out`` (a new or empty folder, never one of the inputs; ``force`` replaces an
    earlier comparison there; default ``runs/<time>-compare``). An interrupted sweep is compared on the points it
    finished. Returns the document ``compare.json`` holds."""
    if len(folders) < 2:
        raise DiffprobeError("compare needs at least two run folders")
    paths = [Path(f) for f in folders]
    if out is not None and str(out).strip() and any(Path(out).resolve() == p.resolve() for p in paths):
        raise DiffprobeError(f"--out {out} is one of the runs being compared; name a new folder for the comparison")
    loaded = []
    for path in paths:
        kind, d = read_result(path)
        loaded.append((path, kind, {**d, "findings": current_findings(path, d)} if kind == "sweep" else d))
    result = compare(loaded)
    out_dir = prepare_out_dir(out, "compare", force)
    try:
        doc = CompareDocument.from_fields({**result, "run_dir": str(out_dir)})
        write_document(out_dir, doc)
        frame = pd.DataFrame(rows(doc))
        atomic_write(out_dir / "comparison.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    finally:
        release_folder(out_dir)  # written: its files claim it from now on
    return doc
