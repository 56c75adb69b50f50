"""What a run ran on: versions, device, threads. Stored in every ``run.json``."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def meminfo_bytes(key: str) -> int | None:
    """A field of ``/proc/meminfo`` (``MemTotal``, ``MemAvailable``) in bytes, or None where there is none."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_memory(device: str) -> int | None:
    """Bytes a run may still allocate on ``device``: free GPU memory (CUDA), else ``MemAvailable``; None if
    unknown."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return meminfo_bytes("MemAvailable")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def environment(device: str) -> dict:
    """A JSON-ready description of the software and hardware a run used."""
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "diffprobe": _version("diffprobe"),
        "device": device,
        "device_name": device_name(device),
        "cuda": torch.version.cuda or "none (CPU build of torch)",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX2, AVX512, ...: which kernels CPU ops run
    }
