"""``diffprobe hardware calibrate``: achieved-throughput curves of this machine for each operator class the records
use, the data of the calibrated performance model (:mod:`diffprobe.analyses.predict`).

Measured, each as the median of a few timed runs (every run long enough to time: a short op is repeated until a run
takes at least ``MIN_RUN_S``), with bias as ``nn.Linear`` and ``nn.Conv2d`` hold one:

* ``gemm``: FLOP/s of ``F.linear`` (x @ W^T, as ``nn.Linear``) over a grid of (M, N, K);
* ``conv``: FLOP/s of ``conv2d`` (3x3 and 1x1, the embedded models' kernels) over (pixels = batch x H x W, C_in,
  C_out);
* ``sdpa``: FLOP/s of ``scaled_dot_product_attention`` over (query tokens, key tokens, head dim);
* ``memory``: bytes/s of the memory-bound classes (elementwise, activation: silu and its kind, softmax,
  normalization, copy) over the bytes they move, each call allocating its output as a pipeline's ops do;
  ``memory_fresh`` the same for outputs of ``fresh_pages_bytes`` or more (on the CPU: new pages every call);
* ``view_s``: the dispatch cost of an op that moves nothing (a view);
* ``meta.reference_probes``: the FLOP/s of one fixed GEMM and convolution (:func:`reference_rate`) timed before,
  between and after the curves: how steady the machine was while they were measured (``reference_spread``; a
  ``steadiness_note`` past :data:`~diffprobe.hardware.steadiness.STEADY`), and its speed then
  (``reference_flops_per_s``), which a measured run priced by this calibration times again
  (:func:`diffprobe.analyses.predict.machine_speed`).

GEMM and convolution weights are read cold, as in a pipeline (every other layer's weights have passed through the
caches since a layer last ran): each call takes the next of copies that together exceed twice the last-level cache
(``weights_cold_bytes``); the activations are the same tensor every call (a pipeline's input was just written).

A point below 0.88x the median of its grid neighbours is timed again once its whole grid was, and keeps the higher
of its two rates (``retimed`` lists them: :func:`~diffprobe.hardware.steadiness.retime_dips`; a shared machine's
slow second is not a shape's speed). A grid point whose product is too large to time cheaply is measured with fewer
rows (M, pixels or batch x heads), where the achieved rate has long saturated: ``rows_capped`` says which. Every
curve is per dtype and device; the table records the date, CPU model, ``cpu_capability``, torch version and threads
it holds for.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import statistics
import time
from pathlib import Path

from diffprobe.errors import DiffprobeError, interruption
from diffprobe.hardware.steadiness import memory_speed_factor, retime_dips, speed_factor, steadiness

MIN_RUN_S = 0.01
GRIDS = {
    "full": {"gemm": {"m": [16, 64, 256, 1024, 4096, 16384], "n": [64, 320, 640, 1280, 2560, 5120],
                      "k": [64, 320, 640, 1280, 2560, 5120]},
             "conv": {"pixels": [32, 128, 512, 2048, 8192, 32768, 131072],
                      "cin": [4, 128, 320, 640, 1280, 2560],
                      "cout": [4, 128, 320, 640, 1280]},
             "sdpa": {"q": [64, 256, 1024, 4096, 8192], "kv": [64, 256, 1024, 4096, 8192], "d": [40, 64, 128, 512]},
             # bytes moved; a third of them the output: under FRESH_PAGES_BYTES, then beyond it
             "memory_bytes": [*(2 ** e for e in range(12, 25, 2)), 72 << 20],
             "memory_fresh_bytes": [2 ** 27, 2 ** 28, 2 ** 29],
             "flop_cap": 2e10, "repeats": 3},
    "quick": {"gemm": {"m": [64, 256, 1024, 8192], "n": [320, 1280, 5120], "k": [320, 1280, 5120]},
              "conv": {"pixels": [32, 512, 8192], "cin": [4, 320, 1280], "cout": [4, 320, 1280]},
              "sdpa": {"q": [256, 4096], "kv": [77, 4096], "d": [40, 64, 128]},
              "memory_bytes": [*(2 ** e for e in range(12, 25, 4)), 72 << 20], "memory_fresh_bytes": [2 ** 27, 2 ** 29],
              "flop_cap": 1e10, "repeats": 2},
}
MEMORY_CLASSES = ("elementwise", "activation", "softmax", "norm", "copy")


_SYNC: list = []  # the device's synchronize while a CUDA calibration runs (its kernels are asynchronous)


def _sync() -> None:
    for sync in _SYNC:
        sync()


@contextlib.contextmanager
def synced(device: str):
    """Inside, :func:`typical_seconds` waits for ``device`` (a CUDA device's kernels are asynchronous)."""
    if not device.startswith("cuda"):
        yield
        return
    import torch

    def sync() -> None:
        torch.cuda.synchronize(device)

    _SYNC.append(sync)
    try:
        yield
    finally:
        _SYNC.remove(sync)


def typical_seconds(fn, repeats: int) -> float:
    """Seconds of one call of ``fn``: the median of ``repeats`` runs, each repeating it until it takes ``MIN_RUN_S``
    (on CUDA, each run ends when the device has finished). The median, not the best: a pipeline meets the machine
    as it typically is (on a shared machine the best of a few runs is several percent faster than the typical)."""
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < MIN_RUN_S or calls < (2 if time.perf_counter() - start < 0.1 else 1):
        fn()  # warm-up: page faults, kernel selection, and the thread pool awake as in a pipeline (a pool that has
        _sync()  # gone to sleep takes milliseconds to wake); a call of 0.1 s or more is warm after one
        calls += 1
    t0 = time.perf_counter()
    fn()
    _sync()
    one = max(time.perf_counter() - t0, 1e-7)
    n = max(1, min(10_000, math.ceil(MIN_RUN_S / one)))
    runs = [one] if n == 1 else []  # a call long enough to time alone is the first run already
    while len(runs) < repeats:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync()
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


REFERENCE_GEMM = (1024, 1280, 1280)  # M, N, K: a linear layer of SD's middle levels
REFERENCE_CONV = (2, 320, 32)  # batch, channels, side: a 3x3 convolution of SD's first level at 256 px


def reference_rate(dtype: str = "float32", device: str = "cpu", repeats: int = 5) -> float:
    """FLOP/s of a fixed GEMM (:data:`REFERENCE_GEMM`) and 3x3 convolution (:data:`REFERENCE_CONV`) together (their
    FLOPs over their summed :func:`typical_seconds`): this machine's speed now, in about a third of a second on a
    2-core CPU. Timed through a calibration and around a run it prices, it says whether the machine moved between
    them (a shared VM's speed drifts by tens of percent within an hour)."""
    import torch
    import torch.nn.functional as F

    tdtype = getattr(torch, dtype)
    m, n, k = REFERENCE_GEMM
    batch, ch, side = REFERENCE_CONV
    gen = torch.Generator().manual_seed(0)
    a, w = (torch.randn(*s, generator=gen).to(device=device, dtype=tdtype) for s in ((m, k), (n, k)))
    x = torch.randn(batch, ch, side, side, generator=gen).to(device=device, dtype=tdtype)
    kernel = torch.randn(ch, ch, 3, 3, generator=gen).to(device=device, dtype=tdtype)
    calls = (lambda: F.linear(a, w), lambda: F.conv2d(x, kernel, padding=1))
    with synced(device), torch.inference_mode():
        start = time.perf_counter()
        while time.perf_counter() - start < 0.1:  # a process's first calls run slower (here the first probe of a
            for fn in calls:  # fresh process 0.90x the next ones): warm both first
                fn()
            _sync()
        secs = sum(typical_seconds(fn, repeats) for fn in calls)
    return (2.0 * m * n * k + 2.0 * batch * side * side * ch * ch * 9) / secs


def _rows(total_flops: float, rows: int, cap: float, least: int = 1) -> int:
    """Rows to time so that the call stays under ``cap`` FLOPs, but never fewer than ``least`` (where the rate has
    saturated, the rate at that many rows stands for all)."""
    if total_flops <= cap:
        return rows
    return min(rows, max(least, int(rows * cap / total_flops)))


CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def last_level_cache_bytes(device: str, caches: Path = CPU_CACHES) -> int:
    """The largest cache of ``device`` (the CPU's largest level in ``caches``, sysfs; a GPU's L2), 32 MiB where it
    cannot be read."""
    import torch

    if device.startswith("cuda"):
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 32 << 20)
    sizes = []
    for index in caches.glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
            sizes.append(int(text.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1))
        except (OSError, ValueError):
            continue
    return max(sizes, default=0) or 32 << 20


def cold(shape: tuple, dtype, device: str, pool_bytes: int):
    """A function giving another tensor of ``shape`` each call, cycling through copies that together hold at least
    ``pool_bytes`` (the calibration: twice the last-level cache): a pipeline reads each layer's weights from memory,
    as every other layer's weights went through the caches since (one weight reused call after call from the cache
    would be priced too fast)."""
    import itertools

    import torch

    base = torch.randn(*shape, device=device).to(dtype)
    count = max(1, min(4096, math.ceil(pool_bytes / max(1, base.numel() * base.element_size()))))
    copies = base.expand(count, *shape).clone().unbind(0) if count > 1 else (base,)
    return itertools.cycle(copies).__next__


def gemm_curve(grid: dict, dtype, device: str, cap: float, repeats: int, tick, pool_bytes: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    capped = []

    def rates_for(n: int, k: int, ms: list[int], count: bool = True) -> list[float]:
        weight = cold((n, k), dtype, device, pool_bytes)  # as nn.Linear holds it: x @ W^T
        bias = torch.randn(n, device=device).to(dtype)
        out = []
        for m in ms:
            rows = _rows(2.0 * m * n * k, m, cap, least=512)
            a = torch.randn(rows, k, device=device).to(dtype)
            secs = typical_seconds(lambda a=a, w=weight, b=bias: F.linear(a, w(), b), repeats)
            out.append(2.0 * rows * n * k / secs * speed_factor())
            if rows < m and [m, n, k, rows] not in capped:
                capped.append([m, n, k, rows])
            if count:  # the progress counts the grid's points, not their retiming
                tick()
        return out

    rates = [[[0.0] * len(grid["k"]) for _ in grid["n"]] for _ in grid["m"]]
    for j, n in enumerate(grid["n"]):
        for k_i, k in enumerate(grid["k"]):
            for i, rate in enumerate(rates_for(n, k, grid["m"])):
                rates[i][j][k_i] = rate
    rates, again = retime_dips(rates, lambda idx: rates_for(grid["n"][idx[1]], grid["k"][idx[2]],
                                                             [grid["m"][idx[0]]], False)[0])
    return {"axes": ["m", "n", "k"], **{ax: list(grid[ax]) for ax in ("m", "n", "k")}, "flops_per_s": rates,
            "rows_capped": sorted(capped), "retimed": again}


def _conv_least(pixels: int, cin: int, cout: int, kernel: int, itemsize: int, spill_bytes: int, cap: float) -> int:
    """The fewest pixels a capped convolution point is timed with: 4096; but where the point's activations (input
    and output) exceed ``spill_bytes`` (twice the last-level cache), enough pixels that the timed ones do too, where
    that costs at most ten caps: a convolution whose activations spill from the cache runs slower (a 1x1 one 3x
    slower here, past 16k pixels of 128 + 256 channels)."""
    spill = math.ceil(spill_bytes / ((cin + cout) * itemsize)) if spill_bytes else pixels + 1
    if pixels >= spill and 2.0 * spill * cin * cout * kernel * kernel <= 10 * cap:
        return min(pixels, max(4096, spill))
    return 4096


def conv_curve(grid: dict, dtype, device: str, cap: float, repeats: int, tick, pool_bytes: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    itemsize = torch.empty((), dtype=dtype).element_size()

    def rates_for(kernel: int, cin: int, cout: int, pixel_list: list[int], count: bool = True) -> list[float]:
        weight = cold((cout, cin, kernel, kernel), dtype, device, pool_bytes)
        bias = torch.randn(cout, device=device).to(dtype)
        out = []
        for pixels in pixel_list:
            flops = 2.0 * pixels * cin * cout * kernel * kernel
            px = _rows(flops, pixels, cap, least=_conv_least(pixels, cin, cout, kernel, itemsize, pool_bytes, cap))
            side = max(1, round(math.sqrt(px / 2)))  # a batch of two, as classifier-free guidance runs
            x = torch.randn(2, cin, side, side, device=device).to(dtype)
            secs = typical_seconds(lambda x=x, w=weight, b=bias, p=kernel // 2: F.conv2d(x, w(), b, padding=p),
                                   repeats)
            out.append(2.0 * 2 * side * side * cin * cout * kernel * kernel / secs * speed_factor())
            if count:
                tick()
        return out

    out = {}
    for kernel in (3, 1):
        rates = [[[0.0] * len(grid["cout"]) for _ in grid["cin"]] for _ in grid["pixels"]]
        for j, cin in enumerate(grid["cin"]):
            for k_i, cout in enumerate(grid["cout"]):
                for i, rate in enumerate(rates_for(kernel, cin, cout, grid["pixels"])):
                    rates[i][j][k_i] = rate
        rates, again = retime_dips(rates, lambda idx, kernel=kernel: rates_for(
            kernel, grid["cin"][idx[1]], grid["cout"][idx[2]], [grid["pixels"][idx[0]]], False)[0])
        out[f"k{kernel}"] = {"axes": ["pixels", "cin", "cout"], "pixels": list(grid["pixels"]),
                             "cin": list(grid["cin"]), "cout": list(grid["cout"]), "flops_per_s": rates,
                             "retimed": again}
    return out


def sdpa_curve(grid: dict, dtype, device: str, cap: float, repeats: int, tick) -> dict:
    import torch
    import torch.nn.functional as F

    def rate(q: int, kv: int, d: int, count: bool = True) -> float:
        bh = _rows(4.0 * 16 * q * kv * d, 16, cap)
        qq = torch.randn(1, bh, q, d, device=device).to(dtype)
        kk = torch.randn(1, bh, kv, d, device=device).to(dtype)
        vv = torch.randn(1, bh, kv, d, device=device).to(dtype)
        secs = typical_seconds(lambda: F.scaled_dot_product_attention(qq, kk, vv), repeats)
        if count:
            tick()
        return 4.0 * bh * q * kv * d / secs * speed_factor()

    rates = [[[rate(q, kv, d) for d in grid["d"]] for kv in grid["kv"]] for q in grid["q"]]
    rates, again = retime_dips(rates, lambda idx: rate(grid["q"][idx[0]], grid["kv"][idx[1]], grid["d"][idx[2]],
                                                       False))
    return {"axes": ["q", "kv", "d"], **{ax: list(grid[ax]) for ax in ("q", "kv", "d")}, "flops_per_s": rates,
            "retimed": again}


FRESH_PAGES_BYTES = 32 << 20  # glibc's largest mmap threshold (64-bit): a block this large is new pages each time


def memory_curves(sizes: list[int], dtype, device: str, repeats: int, tick) -> dict:
    """Bytes/s of each memory-bound class over the bytes it moves (read + written); each call allocates its output
    (a third of the bytes moved), as a pipeline's ops do. Under a speedometer, each point of a megabyte or more at
    the first probe's speed (:func:`~diffprobe.hardware.steadiness.memory_speed_factor`)."""
    import torch
    import torch.nn.functional as F

    itemsize = torch.empty((), dtype=dtype).element_size()
    out = {c: [] for c in MEMORY_CLASSES}

    def point(cls: str, moved: int, secs: float) -> None:  # at the calibration's one speed, where large enough
        out[cls].append([moved, moved / secs * memory_speed_factor(cls, moved)])

    for nbytes in sizes:
        n = max(64, nbytes // (3 * itemsize))  # a + b -> c moves three tensors
        a, b = torch.randn(n, device=device).to(dtype), torch.randn(n, device=device).to(dtype)
        point("elementwise", 3 * n * itemsize, typical_seconds(lambda a=a, b=b: torch.add(a, b), repeats))
        # transcendental: computes more per byte
        point("activation", 2 * n * itemsize, typical_seconds(lambda a=a: F.silu(a), repeats))
        rows = max(1, (2 * n) // 1024)
        x = torch.randn(rows, 512, device=device).to(dtype)
        moved = 2 * x.numel() * itemsize
        point("softmax", moved, typical_seconds(lambda x=x: torch.softmax(x, -1), repeats))
        g = torch.randn(1, 32, max(1, x.numel() // 32), device=device).to(dtype)
        point("norm", moved, typical_seconds(lambda g=g: F.group_norm(g, 32), repeats))
        point("copy", moved, typical_seconds(lambda x=x: x.clone(), repeats))
        tick(len(MEMORY_CLASSES))
    return out


def _memory(g: dict, dtype, device: str, tick) -> dict:
    """The memory curves: on the CPU two, ``memory`` (outputs under :data:`FRESH_PAGES_BYTES`, which the allocator
    recycles) and ``memory_fresh`` (larger outputs: new pages, each faulted in on first write — 4-5x slower per byte
    here, a cliff no interpolation across it would catch); on a GPU one (its caching allocator recycles all)."""
    fresh = g.get("memory_fresh_bytes", [])
    if device.startswith("cuda") or not fresh:
        return {"memory": memory_curves([*g["memory_bytes"], *fresh], dtype, device, g["repeats"], tick)}
    return {"memory": memory_curves(g["memory_bytes"], dtype, device, g["repeats"], tick),
            "memory_fresh": memory_curves(fresh, dtype, device, g["repeats"], tick)}


def view_seconds(device: str, repeats: int) -> float:
    import torch

    x = torch.randn(64, 64, device=device)
    return typical_seconds(lambda: x.view(4096), repeats)


def highest_rates(table: dict) -> tuple[float, float]:
    """The highest FLOP/s (GEMM, convolution, SDPA) and memory bytes/s (each memory curve at its largest size, past
    the caches: ``memory_fresh``'s where measured) a calibration measured: a ceiling measured lower (a roofline peak
    timed in a slow moment of a shared machine) is no ceiling for them."""
    import numpy as np

    flops = [np.max(c["flops_per_s"]) for c in (table["gemm"], table["sdpa"], *table["conv"].values())]
    moved = [max(pts, key=lambda p: p[0])[1] for pts in (table.get("memory_fresh") or table["memory"]).values()]
    return float(max(flops)), float(max(moved, default=0.0))


def points(g: dict) -> int:
    """Measurements of a grid (for the progress bar)."""
    return (math.prod(len(v) for v in g["gemm"].values()) + 2 * math.prod(len(v) for v in g["conv"].values())
            + math.prod(len(v) for v in g["sdpa"].values())
            + len(MEMORY_CLASSES) * (len(g["memory_bytes"]) + len(g.get("memory_fresh_bytes", []))) + 1)


def calibrate(level: str = "full", dtype: str = "float32", device: str = "cpu", progress=None,
              grids: dict | None = None, passes: int = 1) -> dict:
    """The calibration table of this machine (see the module's docstring); ``progress(stage, done, total)``.
    ``grids``: another grid than the level's (the same keys as :data:`GRIDS`' entries; tests use a small one).
    ``passes``: the grids timed that many times over, each rate the median of the passes
    (:func:`~diffprobe.hardware.passes.median_of_passes`); the reference probed after each curve of each pass."""
    import torch

    from diffprobe.hardware.passes import check as check_passes
    from diffprobe.hardware.passes import median_of_passes

    if grids is None and level not in GRIDS:
        raise DiffprobeError(f"calibration level {level!r} is not one of {', '.join(GRIDS)}")
    if device != "cpu" and not (device.startswith("cuda") and torch.cuda.is_available()):
        raise DiffprobeError(f"--device {device}: calibrate on cpu, or cuda where a GPU is present")
    check_passes(passes)
    g, tdtype = grids or GRIDS[level], getattr(torch, dtype)
    total, done = passes * (points(g) - 1) + 1, [0]
    report = progress or (lambda *_: None)

    def tick(n: int = 1) -> None:
        done[0] += n
        report("calibrating", done[0], total)

    started, pool = time.perf_counter(), 2 * last_level_cache_bytes(device)
    probes = [reference_rate(dtype, device)]  # the machine's speed before, between and after the curves
    tables, table = [], {}
    try:
        with synced(device):
            for _ in range(passes):
                table = {}
                table["gemm"] = gemm_curve(g["gemm"], tdtype, device, g["flop_cap"], g["repeats"], tick, pool)
                probes.append(reference_rate(dtype, device))
                table["conv"] = conv_curve(g["conv"], tdtype, device, g["flop_cap"], g["repeats"], tick, pool)
                probes.append(reference_rate(dtype, device))
                table["sdpa"] = sdpa_curve(g["sdpa"], tdtype, device, g["flop_cap"], g["repeats"], tick)
                table.update(_memory(g, tdtype, device, tick), view_s=view_seconds(device, g["repeats"]))
                probes.append(reference_rate(dtype, device))
                tables.append(table)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: the passes that finished are a calibration; the rest kept
        from diffprobe.hardware.passes import Interrupted

        curves, kept = {} if tables and table is tables[-1] else table, None  # curves: the unfinished pass's
        if tables:  # the unfinished pass's curves in their medians too: nothing measured is lost
            kept = _with_meta(median_of_passes(tables, curves), level, device, dtype, started, pool, len(tables),
                              probes)
            kept["meta"]["interrupted"] = (f"interrupted ({interruption(exc)}) after {len(tables)} of {passes} "
                                           "passes through the grids" + (f" (the unfinished pass's curves in the "
                                                                         f"medians too: {', '.join(curves)})"
                                                                         if curves else ""))
        raise Interrupted(exc, kept, curves) from exc
    tick()
    return _with_meta(median_of_passes(tables), level, device, dtype, started, pool, passes, probes)


def _with_meta(table: dict, level: str, device: str, dtype: str, started: float, pool: int, passes: int,
               probes: list[float]) -> dict:
    """The calibration table with its ``meta``: when, on what, how long, how steady."""
    import torch

    from diffprobe.hardware.environment import cpu_name

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "level": level,
            "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": device, "dtype": dtype,
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
            "seconds": time.perf_counter() - started, "weights_cold_bytes": pool, "passes": passes,
            **({"fresh_pages_bytes": FRESH_PAGES_BYTES} if "memory_fresh" in table else {}), **steadiness(probes)}
    return {"meta": meta, **table}
