"""``this-cpu``: the ceilings of the machine diffprobe runs on, measured on the spot and cached per machine.

* Peak FLOP/s per dtype: the best of a few large square matmuls (``torch.mm``), 2·n³ FLOPs each.
* Memory bandwidth: the best of a few copies of a tensor far larger than the caches, 2 × its size in bytes
  (read once, written once).

The cache key is the CPU model, the torch thread count and the torch version, so another machine, another
thread setting or another torch gets its own measurement. ``diffprobe hardware measure`` re-measures.
"""

from __future__ import annotations

import datetime
import hashlib
import json

from diffprobe.errors import DiffprobeError
from diffprobe.hardware.environment import cpu_name, meminfo_bytes
from diffprobe.hardware.preset import THIS_CPU, HardwarePreset, from_dict
from diffprobe.models.tokenizer import cache_dir
from diffprobe.records.runfolder import write_json
from diffprobe.timing.clock import Clock

DEFAULT_SIZES = {"matmul_n": {"float32": 2048, "bfloat16": 1024, "float16": 1024}, "copy_bytes": 512 * 2**20,
                 "repeats": 3}


def _best_seconds(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls after a warm-up (first-touch page faults, kernel selection)."""
    return Clock("cpu").best_of(fn, repeats)


def matmul_flops(dtype: str, n: int, repeats: int) -> float:
    """FLOP/s of an n×n by n×n matmul in ``dtype`` on the CPU (best of ``repeats``)."""
    import torch

    a = torch.randn(n, n).to(getattr(torch, dtype))
    b = torch.randn(n, n).to(getattr(torch, dtype))
    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), repeats)


def copy_bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes/s of copying ``nbytes`` into another buffer (read + write counted)."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), repeats)


def memory_bytes() -> float:
    total = meminfo_bytes("MemTotal")
    if total is not None:
        return float(total)
    import os

    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def machine_key() -> dict:
    import torch

    return {"cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def measure(sizes: dict | None = None) -> dict:
    """Measure this CPU now; returns the preset as a dict (see :func:`diffprobe.hardware.presets.from_dict`)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    key = machine_key()
    peaks = {dt: matmul_flops(dt, n, sizes["repeats"]) for dt, n in sizes["matmul_n"].items()}
    bandwidth = copy_bandwidth(sizes["copy_bytes"], sizes["repeats"])
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {
        "name": THIS_CPU,
        "title": f"{key['cpu']} ({key['torch_threads']} torch threads)",
        "kind": "cpu",
        "source": f"measured on this machine at {when}: best of {sizes['repeats']} torch.mm per dtype "
                  f"(n = {sizes['matmul_n']}) and best of {sizes['repeats']} copies of "
                  f"{sizes['copy_bytes'] / 2**20:.0f} MiB",
        "memory_bytes": memory_bytes(),
        "memory_bandwidth": bandwidth,
        "peak_flops": peaks,
        "measured": {**key, "at": when, "sizes": sizes},
    }


def cache_path():
    digest = hashlib.sha1(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "hardware" / f"this-cpu-{digest}.json"


def this_cpu(*, remeasure: bool = False, sizes: dict | None = None) -> HardwarePreset:
    """The measured ``this-cpu`` preset, from the per-machine cache unless ``remeasure``."""

    path = cache_path()
    if not remeasure and path.exists():
        try:
            return from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (ValueError, OSError, DiffprobeError):
            pass  # a damaged cache is measured again
    data = measure(sizes)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
    return from_dict(data, str(path))
