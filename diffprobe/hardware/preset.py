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
    calibration: dict = field(default_factory=dict)  # achieved-throughput curves (diffprobe hardware calibrate)

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
                "peak_flops": dict(self.peak_flops), "measured": dict(self.measured),
                **({"calibration": self.calibration} if self.calibration else {})}


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
                          peak_flops={k: float(v) for k, v in peaks.items()}, measured=dict(data.get("measured", {})),
                          calibration=check_calibration(data.get("calibration"), origin))


CALIBRATION_KEYS = ("meta", "gemm", "conv", "sdpa", "memory", "view_s")
META_KEYS = ("date", "cpu", "cpu_capability", "torch", "threads", "device", "dtype")


def _positive(value) -> bool:
    """A finite number above 0 (not a bool)."""
    import math

    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_grids(cal: dict, bad: str) -> None:
    """Every FLOP curve's axes increasing and its rates a positive grid of their lengths."""
    import numpy as np

    optional = (("block_sparse", ("tokens", "d", "density")), ("block_index", ("tokens", "d", "heads")))
    grids = [("gemm", cal["gemm"], ("m", "n", "k")), ("sdpa", cal["sdpa"], ("q", "kv", "d")),
             *((f"conv.{k}", cal["conv"].get(k, {}), ("pixels", "cin", "cout")) for k in ("k3", "k1")),
             *((name, cal[name], axes) for name, axes in optional if name in cal)]
    for name, curve, axes in grids:
        try:
            shape = tuple(len(curve[a]) for a in axes)
            rates = np.asarray(curve["flops_per_s"], dtype=float)
            ok = rates.shape == shape and np.all(np.isfinite(rates)) and np.all(rates > 0) and all(
                np.all(np.diff(np.asarray(curve[a], dtype=float)) > 0) for a in axes)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise DiffprobeError(f"{bad}.{name}: needs increasing axes {', '.join(axes)} and a positive "
                                 "flops_per_s grid of their lengths")


def check_calibration(cal, origin: str) -> dict:
    """A preset's calibration table, checked (every curve present, its grid and rates the right shapes, every
    number finite and positive); none: an empty dict (the roofline alone)."""
    import math

    import numpy as np

    if cal is None:
        return {}
    bad = f"hardware preset {origin}: calibration"
    if not isinstance(cal, dict):
        raise DiffprobeError(f"{bad} must be a table")
    missing = [k for k in CALIBRATION_KEYS if k not in cal]
    if missing:
        raise DiffprobeError(f"{bad} is missing {missing[0]!r} (re-run `diffprobe hardware calibrate`)")
    meta_missing = [k for k in META_KEYS if k not in cal["meta"]]
    if meta_missing:
        raise DiffprobeError(f"{bad}.meta is missing {meta_missing[0]!r}")
    _check_grids(cal, bad)
    if "block_sparse" in cal and not 0 < cal["block_sparse"]["density"][0] <= cal["block_sparse"]["density"][-1] <= 1:
        raise DiffprobeError(f"{bad}.block_sparse.density must be in (0, 1]")
    for table in ("memory", *(("memory_fresh",) if "memory_fresh" in cal else ())):
        curves = cal[table] if isinstance(cal[table], dict) else {}
        for cls in ("elementwise", "softmax", "norm", "copy", *(("activation",) if "activation" in curves else ())):
            try:
                pts = np.asarray(curves[cls], dtype=float)
                ok = pts.ndim == 2 and pts.shape[1] == 2 and len(pts) >= 1 and np.all(pts > 0) and np.all(
                    np.isfinite(pts))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise DiffprobeError(f"{bad}.{table}.{cls}: needs [bytes, bytes/s] pairs, positive")
    if not _positive(cal["meta"].get("reference_flops_per_s", 1)):  # (a calibration before the probe has none)
        raise DiffprobeError(f"{bad}.meta.reference_flops_per_s must be a positive number of FLOP/s")
    if not _positive(cal["meta"].get("fresh_pages_bytes", 1)):
        raise DiffprobeError(f"{bad}.meta.fresh_pages_bytes must be a positive number of bytes")
    for key, what in (("overhead_s", "stage"), ("denoiser_overhead_s", "denoiser component")):
        overhead = cal.get(key, {})
        if not isinstance(overhead, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                math.isfinite(v) and v >= 0) for v in overhead.values()):
            raise DiffprobeError(f"{bad}.{key} must be a table of {what} = seconds per record, each 0 or more")
    if not _positive(cal["view_s"]):
        raise DiffprobeError(f"{bad}.view_s must be a positive number of seconds")
    return cal


def calibration_mismatch(cal: dict) -> str | None:
    """One line saying how this machine differs from the one a calibration was measured on (another CPU, CPU
    capability, torch or thread count), or None."""
    import torch

    from diffprobe.hardware.environment import cpu_name

    meta = cal["meta"]
    here = {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    diff = [f"{k} {meta.get(k)!r} (here {v!r})" for k, v in here.items() if meta.get(k) != v]
    if not diff:
        return None
    return (f"the calibration was measured with another {', '.join(diff)}: its predictions are for that machine, "
            "not this one")


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


def to_toml(data: dict) -> str:
    """``data`` (strings, numbers, booleans, lists of them or of lists, nested tables; None left out) as TOML text,
    which :func:`read_toml` reads back to the same values."""
    import json
    import math

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"TOML has no {v}")
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # a TOML basic string
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise ValueError(f"cannot write {type(v).__name__} to TOML")

    lines: list[str] = []

    def table(d: dict, prefix: str) -> None:
        if prefix:
            lines.extend(["", f"[{prefix}]"])
        for k, v in d.items():
            if v is not None and not isinstance(v, dict):
                lines.append(f"{json.dumps(k) if not k.replace('_', '').isalnum() else k} = {value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                table(v, f"{prefix}.{k}" if prefix else k)

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"
