"""``diffprobe hardware calibrate``: achieved-throughput curves of this machine for each operator class the records
use, the data of the calibrated performance model (:mod:`diffprobe.analyses.predict`).

Measured, each as the best of a few timed runs (every run long enough to time: a short op is repeated until a run
takes at least ``MIN_RUN_S``):

* ``gemm``: FLOP/s of ``torch.mm`` over a grid of (M, N, K);
* ``conv``: FLOP/s of ``conv2d`` (3x3 and 1x1, the embedded models' kernels) over (pixels = batch x H x W, C_in,
  C_out);
* ``sdpa``: FLOP/s of ``scaled_dot_product_attention`` over (query tokens, key tokens, head dim);
* ``memory``: bytes/s of the memory-bound classes (elementwise, activation: silu and its kind, softmax,
  normalization, copy) over the bytes they move, each call allocating its output as a pipeline's ops do;
* ``view_s``: the dispatch cost of an op that moves nothing (a view).

A grid point whose product is too large to time cheaply is measured with fewer rows (M, pixels or batch x heads),
where the achieved rate has long saturated: ``rows_capped`` says which. Every curve is per dtype and device; the
table records the date, CPU model, ``cpu_capability``, torch version and threads it holds for.
"""

from __future__ import annotations

import datetime
import math
import time

from diffprobe.errors import DiffprobeError

MIN_RUN_S = 0.01
GRIDS = {
    "full": {"gemm": {"m": [16, 64, 256, 1024, 4096, 16384], "n": [64, 320, 640, 1280, 2560, 5120],
                      "k": [64, 320, 640, 1280, 2560, 5120]},
             "conv": {"pixels": [32, 128, 512, 2048, 8192, 32768], "cin": [4, 128, 320, 640, 1280, 2560],
                      "cout": [4, 128, 320, 640, 1280]},
             "sdpa": {"q": [64, 256, 1024, 4096, 8192], "kv": [64, 256, 1024, 4096, 8192], "d": [40, 64, 128, 512]},
             "memory_bytes": [2 ** e for e in range(12, 29, 2)],
             "flop_cap": 2e10, "repeats": 3},
    "quick": {"gemm": {"m": [64, 1024, 8192], "n": [320, 1280, 5120], "k": [320, 1280, 5120]},
              "conv": {"pixels": [32, 512, 8192], "cin": [4, 320, 1280], "cout": [4, 320, 1280]},
              "sdpa": {"q": [256, 4096], "kv": [77, 4096], "d": [64]},
              "memory_bytes": [2 ** e for e in range(12, 27, 4)],
              "flop_cap": 1e10, "repeats": 2},
}
MEMORY_CLASSES = ("elementwise", "activation", "softmax", "norm", "copy")


_SYNC: list = []  # the device's synchronize while a CUDA calibration runs (its kernels are asynchronous)


def _sync() -> None:
    for sync in _SYNC:
        sync()


def best_seconds(fn, repeats: int) -> float:
    """Seconds of one call of ``fn``: the best of ``repeats`` runs, each repeating it until it takes ``MIN_RUN_S``
    (on CUDA, each run ends when the device has finished)."""
    start = time.perf_counter()
    calls = 0
    while calls < 2 or time.perf_counter() - start < MIN_RUN_S:  # warm-up: page faults, kernel selection, and the
        fn()  # thread pool awake as in a pipeline (a pool that has gone to sleep takes milliseconds to wake)
        _sync()
        calls += 1
    t0 = time.perf_counter()
    fn()
    _sync()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, min(10_000, math.ceil(MIN_RUN_S / one)))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _rows(total_flops: float, rows: int, cap: float, least: int = 1) -> int:
    """Rows to time so that the call stays under ``cap`` FLOPs, but never fewer than ``least`` (where the rate has
    saturated, the rate at that many rows stands for all)."""
    if total_flops <= cap:
        return rows
    return min(rows, max(least, int(rows * cap / total_flops)))


def gemm_curve(grid: dict, dtype, device: str, cap: float, repeats: int, tick) -> dict:
    import torch

    rates, capped = [], []
    for m in grid["m"]:
        plane = []
        for n in grid["n"]:
            row = []
            for k in grid["k"]:
                rows = _rows(2.0 * m * n * k, m, cap, least=512)
                a = torch.randn(rows, k, device=device).to(dtype)
                b = torch.randn(k, n, device=device).to(dtype)
                row.append(2.0 * rows * n * k / best_seconds(lambda a=a, b=b: torch.mm(a, b), repeats))
                if rows < m:
                    capped.append([m, n, k, rows])
                tick()
            plane.append(row)
        rates.append(plane)
    return {"axes": ["m", "n", "k"], **{ax: list(grid[ax]) for ax in ("m", "n", "k")}, "flops_per_s": rates,
            "rows_capped": capped}


def conv_curve(grid: dict, dtype, device: str, cap: float, repeats: int, tick) -> dict:
    import torch
    import torch.nn.functional as F

    out = {}
    for kernel in (3, 1):
        rates = []
        for pixels in grid["pixels"]:
            plane = []
            for cin in grid["cin"]:
                row = []
                for cout in grid["cout"]:
                    flops = 2.0 * pixels * cin * cout * kernel * kernel
                    px = _rows(flops, pixels, cap, least=4096)
                    side = max(1, round(math.sqrt(px / 2)))  # a batch of two, as classifier-free guidance runs
                    x = torch.randn(2, cin, side, side, device=device).to(dtype)
                    w = torch.randn(cout, cin, kernel, kernel, device=device).to(dtype)
                    secs = best_seconds(lambda x=x, w=w, p=kernel // 2: F.conv2d(x, w, padding=p), repeats)
                    row.append(2.0 * 2 * side * side * cin * cout * kernel * kernel / secs)
                    tick()
                plane.append(row)
            rates.append(plane)
        out[f"k{kernel}"] = {"axes": ["pixels", "cin", "cout"], "pixels": list(grid["pixels"]),
                             "cin": list(grid["cin"]), "cout": list(grid["cout"]), "flops_per_s": rates}
    return out


def sdpa_curve(grid: dict, dtype, device: str, cap: float, repeats: int, tick) -> dict:
    import torch
    import torch.nn.functional as F

    rates = []
    for q in grid["q"]:
        plane = []
        for kv in grid["kv"]:
            row = []
            for d in grid["d"]:
                bh = _rows(4.0 * 16 * q * kv * d, 16, cap)
                qq = torch.randn(1, bh, q, d, device=device).to(dtype)
                kk = torch.randn(1, bh, kv, d, device=device).to(dtype)
                vv = torch.randn(1, bh, kv, d, device=device).to(dtype)
                secs = best_seconds(lambda q=qq, k=kk, v=vv: F.scaled_dot_product_attention(q, k, v), repeats)
                row.append(4.0 * bh * q * kv * d / secs)
                tick()
            plane.append(row)
        rates.append(plane)
    return {"axes": ["q", "kv", "d"], **{ax: list(grid[ax]) for ax in ("q", "kv", "d")}, "flops_per_s": rates}


def memory_curves(sizes: list[int], dtype, device: str, repeats: int, tick) -> dict:
    """Bytes/s of each memory-bound class over the bytes it moves (read + written)."""
    import torch
    import torch.nn.functional as F

    itemsize = torch.empty((), dtype=dtype).element_size()
    out = {c: [] for c in MEMORY_CLASSES}
    for nbytes in sizes:
        n = max(64, nbytes // (3 * itemsize))  # a + b -> c moves three tensors
        a, b = torch.randn(n, device=device).to(dtype), torch.randn(n, device=device).to(dtype)
        # each call allocates its output, as a pipeline's ops do (fresh pages of a large output cost page faults)
        add_s = best_seconds(lambda a=a, b=b: torch.add(a, b), repeats)
        out["elementwise"].append([3 * n * itemsize, 3 * n * itemsize / add_s])
        act_s = best_seconds(lambda a=a: F.silu(a), repeats)  # transcendental: computes more per byte
        out["activation"].append([2 * n * itemsize, 2 * n * itemsize / act_s])
        rows = max(1, (2 * n) // 1024)
        x = torch.randn(rows, 512, device=device).to(dtype)
        moved = 2 * x.numel() * itemsize
        out["softmax"].append([moved, moved / best_seconds(lambda x=x: torch.softmax(x, -1), repeats)])
        g = torch.randn(1, 32, max(1, x.numel() // 32), device=device).to(dtype)
        out["norm"].append([moved, moved / best_seconds(lambda g=g: F.group_norm(g, 32), repeats)])
        out["copy"].append([moved, moved / best_seconds(lambda x=x: x.clone(), repeats)])
        tick(len(MEMORY_CLASSES))
    return out


def view_seconds(device: str, repeats: int) -> float:
    import torch

    x = torch.randn(64, 64, device=device)
    return best_seconds(lambda: x.view(4096), repeats)


def points(g: dict) -> int:
    """Measurements of a grid (for the progress bar)."""
    return (math.prod(len(v) for v in g["gemm"].values()) + 2 * math.prod(len(v) for v in g["conv"].values())
            + math.prod(len(v) for v in g["sdpa"].values()) + len(MEMORY_CLASSES) * len(g["memory_bytes"]) + 1)


def calibrate(level: str = "full", dtype: str = "float32", device: str = "cpu", progress=None,
              grids: dict | None = None) -> dict:
    """The calibration table of this machine (see the module's docstring); ``progress(stage, done, total)``.
    ``grids``: another grid than the level's (the same keys as :data:`GRIDS`' entries; tests use a small one)."""
    import torch

    from diffprobe.hardware.environment import cpu_name

    if grids is None and level not in GRIDS:
        raise DiffprobeError(f"calibration level {level!r} is not one of {', '.join(GRIDS)}")
    if device != "cpu" and not (device.startswith("cuda") and torch.cuda.is_available()):
        raise DiffprobeError(f"--device {device}: calibrate on cpu, or cuda where a GPU is present")
    g, tdtype = grids or GRIDS[level], getattr(torch, dtype)
    total, done = points(g), [0]
    report = progress or (lambda *_: None)

    def tick(n: int = 1) -> None:
        done[0] += n
        report("calibrating", done[0], total)

    started = time.perf_counter()
    if device.startswith("cuda"):
        _SYNC.append(lambda: torch.cuda.synchronize(device))
    try:
        table = {"gemm": gemm_curve(g["gemm"], tdtype, device, g["flop_cap"], g["repeats"], tick),
                 "conv": conv_curve(g["conv"], tdtype, device, g["flop_cap"], g["repeats"], tick),
                 "sdpa": sdpa_curve(g["sdpa"], tdtype, device, g["flop_cap"], g["repeats"], tick),
                 "memory": memory_curves(g["memory_bytes"], tdtype, device, g["repeats"], tick),
                 "view_s": view_seconds(device, g["repeats"])}
    finally:
        _SYNC.clear()
    tick()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "level": level,
            "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device, "dtype": dtype,
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
            "seconds": time.perf_counter() - started}
    return {"meta": meta, **table}
