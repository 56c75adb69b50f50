"""Hardware presets: plain TOML files in ``presets/``, each number with the datasheet it comes from.

A preset gives dense peak FLOP/s per dtype (``peak_flops``), memory bandwidth (bytes/s) and memory size (bytes).
``this-cpu`` is not a file: its ceilings are measured on the spot (see :mod:`diffprobe.hardware.measure`).
A user's own preset is any TOML file with the same fields, passed by path.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.hardware.measure import cache_path, this_cpu
from diffprobe.hardware.preset import (  # noqa: F401  (HardwarePreset, from_dict: imported from here too)
    THIS_CPU,
    HardwarePreset,
    from_dict,
    load_file,
)


def _builtin_files() -> dict[str, Path]:
    folder = resources.files("diffprobe.hardware") / "presets"
    files = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            path = Path(str(entry))
            files[tomllib.loads(path.read_text(encoding="utf-8"))["name"].lower()] = path
    return files


def list_presets() -> list[str]:
    """Names of the built-in presets, ``this-cpu`` last."""
    return sorted(load_file(p).name for p in _builtin_files().values()) + [THIS_CPU]


def get_preset(name: str, *, remeasure: bool = False) -> HardwarePreset:
    """A preset by name (case-insensitive), by path to a TOML file, or ``this-cpu`` (measured, cached)."""
    if name.lower() == THIS_CPU:
        return this_cpu(remeasure=remeasure)
    files = _builtin_files()
    if name.lower() in files:
        return load_file(files[name.lower()])
    if name.endswith(".toml") or "/" in name:
        return load_file(name)
    raise DiffprobeError(f"unknown hardware preset {name!r}; use one of {', '.join(list_presets())} "
                         "or a path to a .toml preset file")


def describe_presets() -> list[dict]:
    """Every preset as a dict (``this-cpu`` only once it has been measured; before, a row saying how to)."""
    rows = []
    for name in list_presets():
        if name == THIS_CPU and not cache_path().exists():
            rows.append({"name": name, "title": "this machine (not measured yet: `diffprobe hardware measure`)"})
            continue
        rows.append(get_preset(name).to_dict())
    return rows
