"""The mask store: what attention kept, per call, saved beside a run (``masks/``) for the accelerator model.

Format (version :data:`MASKS_VERSION`), all under ``masks/``:

* ``index.json``: ``schema_version``, ``kind: "masks"``, ``blocks`` (block sides), ``taus``, ``budget_bytes``,
  ``bytes`` (packed size written), ``truncated`` (the budget stopped the store early: later calls are missing),
  ``source`` (``sparsity``: what covers mass T; ``approx``: what a method applied, with ``method`` and its value
  in place of T: the tiles holding a kept entry, and the kept keys per row), and ``entries``: one per attention
  call (``id``, ``layer``, ``step``, ``attn_kind``, ``q_tokens``,
  ``k_tokens``, ``batch``, ``heads``).
* ``blocks_b<B>_tau<T>.npz``: per entry ``e<id>``, the key blocks kept per query block at block side B and mass
  T (the blocks, ranked by mass, that cover T of each query block's rows: what ``sparsity``'s ``blocks_B_T``
  counts), a bool array (batch, heads, ceil(q/B), ceil(k/B)) bit-packed along the last axis (``np.packbits``).
* ``rows_tau<T>.npz``: per entry ``e<id>``, the keys kept per query row at mass T, (batch, heads, q) as uint16
  (uint32 beyond 65535 keys).

Arrays are stored with ``np.savez_compressed`` (zip, deflate). :class:`MaskStore` reads them back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from diffprobe.errors import DiffprobeError

MASKS_VERSION = 1
MASKS_DIR = "masks"
DEFAULT_BUDGET = 256 * 2**20


def _name_blocks(b: int, tau: float) -> str:
    return f"blocks_b{b}_tau{tau:g}.npz"


def _name_rows(tau: float) -> str:
    return f"rows_tau{tau:g}.npz"


def write_masks(folder: str | Path, entries: list[dict], blocks: tuple[int, ...], taus: tuple[float, ...],
                budget_bytes: int = DEFAULT_BUDGET, meta: dict | None = None) -> dict:
    """Write ``entries`` (each: ``layer``, ``step``, ``attn_kind``, ``q_tokens``, ``k_tokens``, ``blocks``
    {(b, tau): bool tensor (B, H, qb, kb)}, ``rows`` {tau: int tensor (B, H, q)}) as the store in
    ``folder/masks``; stops adding calls once ``budget_bytes`` of packed arrays are written. Returns the index."""
    out = Path(folder) / MASKS_DIR
    out.mkdir(parents=True, exist_ok=True)
    block_arrays = {(b, t): {} for b in blocks for t in taus}
    row_arrays = {t: {} for t in taus}
    index = {"schema_version": MASKS_VERSION, "kind": "masks", "blocks": list(blocks), "taus": list(taus),
             "budget_bytes": int(budget_bytes), "bytes": 0, "truncated": False, **(meta or {}), "entries": []}
    used = 0
    for i, e in enumerate(entries):
        packed_blocks = {k: np.packbits(v.cpu().numpy().astype(bool), axis=-1) for k, v in e["blocks"].items()}
        packed_rows = {}
        for t, v in e["rows"].items():
            arr = v.cpu().numpy()
            packed_rows[t] = arr.astype(np.uint16 if e["k_tokens"] <= 65535 else np.uint32)
        size = sum(a.nbytes for a in packed_blocks.values()) + sum(a.nbytes for a in packed_rows.values())
        if used + size > budget_bytes:
            index["truncated"] = True
            break
        used += size
        some = next(iter(e["rows"].values()), None)
        batch, heads = (int(some.shape[0]), int(some.shape[1])) if some is not None else (0, 0)
        index["entries"].append({"id": i, "layer": e["layer"], "step": int(e["step"]), "attn_kind": e["attn_kind"],
                                 "q_tokens": int(e["q_tokens"]), "k_tokens": int(e["k_tokens"]), "batch": batch,
                                 "heads": heads})
        for k, a in packed_blocks.items():
            block_arrays[k][f"e{i}"] = a
        for t, a in packed_rows.items():
            row_arrays[t][f"e{i}"] = a
    index["bytes"] = used
    for (b, t), arrays in block_arrays.items():
        np.savez_compressed(out / _name_blocks(b, t), **arrays)
    for t, arrays in row_arrays.items():
        np.savez_compressed(out / _name_rows(t), **arrays)
    (out / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return index


class MaskStore:
    """A mask store read back (see the module docstring). ``folder`` is the run folder holding ``masks/`` or
    ``masks/`` itself."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        path = folder if (folder / "index.json").exists() else folder / MASKS_DIR
        if not (path / "index.json").exists():
            raise DiffprobeError(f"no mask store in {folder} (masks/index.json): run `diffprobe sparsity` with "
                                 "--save-masks (the default) to make one")
        try:
            self.index = json.loads((path / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DiffprobeError(f"{path / 'index.json'} is unreadable: {exc}") from exc
        if self.index.get("kind") != "masks" or self.index.get("schema_version") != MASKS_VERSION:
            raise DiffprobeError(f"{path} holds mask store version {self.index.get('schema_version')}; this diffprobe "
                                 f"reads version {MASKS_VERSION}: re-run the sparsity command")
        self.path = path
        self.entries: list[dict] = self.index["entries"]
        self._files: dict[str, object] = {}

    def _file(self, name: str):
        if name not in self._files:
            if not (self.path / name).exists():
                raise DiffprobeError(f"the mask store {self.path} has no {name} (its block sides are "
                                     f"{self.index['blocks']}, its taus {self.index['taus']})")
            self._files[name] = np.load(self.path / name)
        return self._files[name]

    def block_mask(self, entry: dict, b: int, tau: float) -> np.ndarray:
        """The bool array (batch, heads, ceil(q/b), ceil(k/b)) of one entry."""
        packed = self._file(_name_blocks(b, tau))[f"e{entry['id']}"]
        kb = math.ceil(entry["k_tokens"] / b)
        return np.unpackbits(packed, axis=-1, count=kb).astype(bool)

    def row_keys(self, entry: dict, tau: float) -> np.ndarray:
        """Keys kept per query row of one entry, (batch, heads, q)."""
        return self._file(_name_rows(tau))[f"e{entry['id']}"]

    def find(self, layer: str, step: int) -> dict | None:
        """The entry of ``layer`` at ``step`` (or, when that step was not probed, at the last probed step before
        it, else the first after)."""
        same = [e for e in self.entries if e["layer"] == layer]
        if not same:
            return None
        exact = [e for e in same if e["step"] == step]
        if exact:
            return exact[0]
        before = [e for e in same if e["step"] < step]
        return max(before, key=lambda e: e["step"]) if before else min(same, key=lambda e: e["step"])
