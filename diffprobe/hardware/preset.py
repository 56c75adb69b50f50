"""One hardware preset: the dataclass and its validated loading from a TOML file or a stored dict."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from diffprobe.errors import DiffprobeError

THIS_CPU = "this-cpu"
REQUIRED = ("name", "title", "source", "memory_bytes", "memory_bandwidth", "peak_flops")
REQUIRED_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class HardwarePreset:
    name: str
    title: str
    kind: str  # "gpu" or "cpu"
    source: str  # where the numbers come from (datasheet, or "measured on ... at ...")
    memory_bytes: float
    memory_bandwidth: float  # bytes/s
    peak_flops: dict[str, float]  # dtype -> dense FLOP/s
    measured: dict = field(default_factory=dict)  # for measured presets: how (sizes, repeats, machine)

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for a dtype name (``float32``, ``float16``, ``bfloat16``)."""
        try:
            return self.peak_flops[dtype]
        except KeyError:
            raise DiffprobeError(f"preset {self.name} has no peak_flops for dtype {dtype}") from None

    def ridge(self, dtype: str) -> float:
        """Arithmetic intensity (FLOP/byte) where the roofline turns from memory- to compute-bound."""
        return self.peak(dtype) / self.memory_bandwidth

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "kind": self.kind, "source": self.source,
                "memory_bytes": self.memory_bytes, "memory_bandwidth": self.memory_bandwidth,
                "peak_flops": dict(self.peak_flops), "measured": dict(self.measured)}


def from_dict(data: dict, origin: str) -> HardwarePreset:
    """Validate a parsed preset; ``origin`` names the file in error messages."""
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise DiffprobeError(f"hardware preset {origin} is missing field {missing[0]!r} "
                             f"(a preset needs {', '.join(REQUIRED)})")
    peaks = data["peak_flops"]
    if not isinstance(peaks, dict):
        raise DiffprobeError(f"hardware preset {origin}: peak_flops must be a table of dtype = FLOP/s")
    missing = [d for d in REQUIRED_DTYPES if d not in peaks]
    if missing:
        raise DiffprobeError(f"hardware preset {origin} is missing field 'peak_flops.{missing[0]}'")
    for key, value in [("memory_bytes", data["memory_bytes"]), ("memory_bandwidth", data["memory_bandwidth"]),
                       *((f"peak_flops.{k}", v) for k, v in peaks.items())]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise DiffprobeError(f"hardware preset {origin}: {key} must be a positive number, got {value!r}")
    return HardwarePreset(name=str(data["name"]), title=str(data["title"]), kind=str(data.get("kind", "gpu")),
                          source=str(data["source"]), memory_bytes=float(data["memory_bytes"]),
                          memory_bandwidth=float(data["memory_bandwidth"]),
                          peak_flops={k: float(v) for k, v in peaks.items()}, measured=dict(data.get("measured", {})))


def read_toml(path: str | Path, what: str) -> dict:
    """A preset file's table; an unreadable or invalid file is one line naming ``what`` it should be."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DiffprobeError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DiffprobeError(f"{what} {path} is not valid TOML: {exc}") from exc


def load_file(path: str | Path) -> HardwarePreset:
    return from_dict(read_toml(path, "hardware preset"), str(path))
