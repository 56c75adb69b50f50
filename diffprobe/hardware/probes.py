"""The light probes a :class:`~diffprobe.hardware.steadiness.Speedometer` times beside a calibration's points: the
machine's compute speed (a GEMM) and its memory speed (a copy), each in about 40 ms on a 2-core CPU, light enough to
time after every second of a calibration."""

from __future__ import annotations

from diffprobe.hardware.calibrate import REFERENCE_GEMM, synced, typical_seconds

LIGHT_COPY_BYTES = 8 << 20  # the copy probe's source (and destination): past a core's L2, inside what a pipeline's
# elementwise ops move


def light_rate(dtype: str = "float32", device: str = "cpu") -> float:
    """FLOP/s of :data:`~diffprobe.hardware.calibrate.REFERENCE_GEMM` alone, three runs of 10 ms."""
    import torch
    import torch.nn.functional as F

    m, n, k = REFERENCE_GEMM
    gen = torch.Generator().manual_seed(0)
    tdtype = getattr(torch, dtype)
    a, w = (torch.randn(*s, generator=gen).to(device=device, dtype=tdtype) for s in ((m, k), (n, k)))
    with synced(device), torch.inference_mode():
        return 2.0 * m * n * k / typical_seconds(lambda: F.linear(a, w), 3)


def light_bandwidth(dtype: str = "float32", device: str = "cpu") -> float:
    """Bytes/s (read + written) of a copy of :data:`LIGHT_COPY_BYTES` into a buffer allocated once (no page
    faults), three runs of 10 ms."""
    import torch

    tdtype = getattr(torch, dtype)
    n = LIGHT_COPY_BYTES // torch.empty((), dtype=tdtype).element_size()
    src = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=tdtype)
    dst = torch.empty_like(src)
    with synced(device), torch.inference_mode():
        return 2.0 * LIGHT_COPY_BYTES / typical_seconds(lambda: dst.copy_(src), 3)


def light_speeds(dtype: str = "float32", device: str = "cpu") -> dict:
    """Both probes: ``{"flops": light_rate, "bandwidth": light_bandwidth}``."""
    return {"flops": light_rate(dtype, device), "bandwidth": light_bandwidth(dtype, device)}
