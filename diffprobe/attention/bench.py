"""Block-sparse attention vs dense SDPA on this machine, timed in the same call: what ``diffprobe kernels bench``
and ``benchmarks/block_sparse.py`` run.

Inputs are fresh standard-normal q, k, v of shape (batch, heads, tokens, head_dim); the block mask keeps, in every
query block of every head, ``round(density × key blocks)`` key blocks (at least one) drawn at random. Timed:
``dense_s`` (SDPA; on CUDA in half precision its flash backend, and ``dense_default_s`` SDPA's own choice),
``sparse_s`` (block-sparse from the boolean mask: validation, backend choice, layout conversion and kernel, what a
call with a fresh mask pays) and ``kernel_s`` (the kernel on a :class:`BlockLayout` prepared once). Each gets one
untimed warm-up call (for the compiled kernel that includes compiling it: ``first_call_s``), then ``repeats``
timed calls, interleaved; medians are reported. CPU calls are timed with the wall clock, CUDA calls with
CUDA events. ``max_rel_error`` is max |out − ref| / max |ref| against the float64 masked reference
(:func:`~diffprobe.attention.kernels.masked_reference`) on the first ``check_heads`` heads (all by default).
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F

from diffprobe.attention.kernels import BlockLayout, block_sparse_attention, masked_reference
from diffprobe.errors import DiffprobeError
from diffprobe.hardware.environment import cpu_name, meminfo_bytes
from diffprobe.timing.clock import Clock

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def random_block_mask(heads: int, q_blocks: int, k_blocks: int, density: float, generator: torch.Generator,
                      batch: int = 1) -> torch.Tensor:
    """(batch, heads, q_blocks, k_blocks) bool: each query block keeps round(density·k_blocks) ≥ 1 random blocks."""
    keep = max(1, min(k_blocks, round(density * k_blocks)))
    return torch.rand(batch, heads, q_blocks, k_blocks, generator=generator).argsort(-1) < keep


def _dense_fn(q, k, v):
    """Dense SDPA as a user would call it; on CUDA in half precision, the flash backend explicitly."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def flash():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v)
        return flash, "flash"
    return (lambda: F.scaled_dot_product_attention(q, k, v)), "default"


def available_memory(dev: torch.device) -> int:
    """Bytes free for new tensors: the GPU's free memory, or the host's MemAvailable."""
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    free = meminfo_bytes("MemAvailable")
    if free is not None:
        return free
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_estimate(tokens: int, head_dim: int, heads: int, block_size: int, dtype: str, batch: int,
                    check_heads: int) -> int:
    """Bytes a bench call holds at its peak, an upper estimate: q, k, v and the three outputs (dense, sparse,
    kernel) with as much again for kernel workspace and padding, the block mask twice (bool and layout), and for
    the float64 check its k and v copies plus three score-sized buffers of one reference chunk."""
    itemsize = DTYPES[dtype].itemsize
    nb = math.ceil(tokens / block_size)
    bhnd = batch * heads * tokens * head_dim
    est = 12 * bhnd * itemsize + 2 * batch * heads * nb * nb
    if check_heads:
        chunk = max(2**24, batch * check_heads * min(block_size, tokens) * tokens)
        est += 3 * batch * check_heads * tokens * head_dim * 8 + 3 * chunk * 8
    return est


def check_args(tokens: int, density: float, head_dim: int, heads: int, block_size: int, dtype: str, device: str,
               batch: int, repeats: int, check_heads: int | None = None) -> torch.device:
    for name, value in (("--tokens", tokens), ("--head-dim", head_dim), ("--heads", heads),
                        ("--block-size", block_size), ("--batch", batch), ("--repeats", repeats)):
        if value < 1:
            raise DiffprobeError(f"{name} {value} must be a positive integer")
    if not 0 < density <= 1:
        raise DiffprobeError(f"--density {density:g} is outside (0, 1]")
    if block_size > tokens:
        raise DiffprobeError(f"--block-size {block_size} is larger than --tokens {tokens}; a block holds at most "
                             "every token")
    if check_heads is not None and check_heads < 0:
        raise DiffprobeError(f"--check-heads must be 0 (skip the check) or more, got {check_heads}")
    if dtype not in DTYPES:
        raise DiffprobeError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DiffprobeError(f"--device {device!r} is not a device (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DiffprobeError("--device cuda: no CUDA device is available here")
    if dev.type not in ("cpu", "cuda"):
        raise DiffprobeError(f"--device {device!r}: use cpu or cuda")
    checked = heads if check_heads is None else min(heads, check_heads)
    need, free = memory_estimate(tokens, head_dim, heads, block_size, dtype, batch, checked), available_memory(dev)
    if need > 0.8 * free:
        raise DiffprobeError(f"this bench needs about {need / 2**30:.1f} GiB on {dev.type}, but only "
                             f"{free / 2**30:.1f} GiB are available; use fewer --tokens, --heads or --batch"
                             + (", or --check-heads 0" if checked else ""))
    return dev


def estimate_seconds(tokens: int, density: float, head_dim: int, heads: int, dtype: str, dev: torch.device,
                     batch: int, repeats: int, check_heads: int) -> float:
    """A rough time for a bench call, before it starts: its attention FLOPs (dense and block-sparse calls, warm-up
    included, and the float64 check at a quarter of the rate) at the rate this machine reaches on a small dense SDPA
    call of the same head shape, measured now (a few milliseconds)."""
    clock = Clock(dev.type)
    n = min(tokens, 512)
    q = torch.randn(1, heads, n, head_dim).to(dev, DTYPES[dtype])
    F.scaled_dot_product_attention(q, q, q)
    secs = min(clock.time(lambda: F.scaled_dot_product_attention(q, q, q)) for _ in range(3))
    rate = 4 * heads * n * n * head_dim / max(secs, 1e-9)  # FLOP/s of dense attention here
    call = 4 * batch * heads * tokens * tokens * head_dim  # one dense call
    calls = (repeats + 2) * (1 + 2 * density) + 1  # dense, sparse, kernel (each warm-up and repeats), first
    check = 4 * call * check_heads / heads  # the float64 masked reference, at about a quarter of the rate
    return (calls * call + check) / rate


MAX_SECONDS = 300.0  # a bench estimated to take longer is refused unless --max-seconds allows it


def bench_kernel(tokens: int, density: float, head_dim: int = 40, heads: int = 8, *, block_size: int = 64,
                 dtype: str = "float32", device: str = "cpu", batch: int = 1, backend: str = "auto",
                 repeats: int = 5, seed: int = 0, check_heads: int | None = None,
                 max_seconds: float | None = MAX_SECONDS, progress=None) -> dict:
    """One grid point: dense SDPA and block-sparse attention on the same inputs; see the module docstring. A call
    estimated (:func:`estimate_seconds`) to take longer than ``max_seconds`` is refused before it starts (None: no
    limit); ``progress(stage, done, total)`` is told of each timed call."""
    dev = check_args(tokens, density, head_dim, heads, block_size, dtype, device, batch, repeats, check_heads)
    checked = heads if check_heads is None else max(0, min(heads, check_heads))
    _check_time(max_seconds, tokens, density, head_dim, heads, dtype, dev, batch, repeats, checked)
    report = progress or (lambda *_: None)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, tokens, head_dim, generator=g).to(dev, DTYPES[dtype]) for _ in range(3))
    nb = math.ceil(tokens / block_size)
    mask = random_block_mask(heads, nb, nb, density, g, batch).to(dev)
    layout = BlockLayout(mask, tokens, tokens, block_size, backend=backend)
    timed = Clock(dev.type).time  # CPU: wall clock; CUDA: events, synchronized per call
    dense, dense_backend = _dense_fn(q, k, v)
    fns = {"dense": dense,
           # what a caller with a fresh boolean mask pays: validation, backend choice, layout conversion, kernel
           "sparse": lambda: block_sparse_attention(q, k, v, mask, block_size, backend=backend),
           # the kernel alone, its layout prepared once (as when one mask serves many calls)
           "kernel": lambda: block_sparse_attention(q, k, v, layout, block_size)}
    if dev.type == "cuda" and dense_backend != "default":  # SDPA's own choice too (cuDNN on Hopper, say)
        fns["dense_default"] = lambda: F.scaled_dot_product_attention(q, k, v)
    first, med = _medians(fns, timed, repeats, report)
    d, s = med["dense"], med["sparse"]
    kept = layout.kept_fraction
    result = {
        "tokens": tokens, "heads": heads, "head_dim": head_dim, "batch": batch, "block_size": block_size,
        "dtype": dtype, "device": str(dev), "device_name": _device_name(dev), "backend": layout.backend,
        "dense_backend": dense_backend, "density": density, "kept_density": kept, "dense_s": d, "sparse_s": s,
        "speedup": d / s, "kernel_s": med["kernel"], "kernel_speedup": d / med["kernel"], "limit": 1 / kept,
        "first_call_s": first, "repeats": repeats, "torch": torch.__version__, "threads": torch.get_num_threads(),
        # the sparse path's efficiency against dense SDPA: 1 when skipping blocks costs exactly their share of the
        # dense time (at density 1 with --backend flex: the sparse kernel's own speed against dense)
        "efficiency": d * kept / s, "kernel_efficiency": d * kept / med["kernel"],
        "cpu_model": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if "dense_default" in med:
        result["dense_default_s"] = med["dense_default"]
    if d / s > 1.05 / kept:  # faster than skipping alone allows: the dense baseline, not the sparse kernel, is off
        result["above_limit_note"] = _above_limit(dtype, dev)
    h = checked
    if h:  # check_heads=0 skips the check
        out = fns["sparse"]()[:, :h]
        ref = masked_reference(q[:, :h], k[:, :h], v[:, :h], mask[:, :h], block_size)
        result["max_rel_error"] = float((out.double() - ref).abs().max() / ref.abs().max())
        result["checked_heads"] = h
    return result


def _check_time(max_seconds, tokens, density, head_dim, heads, dtype, dev, batch, repeats, checked) -> None:
    """Refuse a bench estimated (:func:`estimate_seconds`) to take longer than ``max_seconds`` (None: no limit)."""
    if max_seconds is None:
        return
    if max_seconds <= 0:
        raise DiffprobeError(f"--max-seconds must be positive, got {max_seconds:g}")
    est = estimate_seconds(tokens, density, head_dim, heads, dtype, dev, batch, repeats, checked)
    if est > max_seconds:
        raise DiffprobeError(f"this bench would take about {est:.0f} s here (estimate), over --max-seconds "
                             f"{max_seconds:g}; pass --max-seconds {10 * math.ceil(est / 5):g} to run it, or use "
                             "fewer --tokens, --heads or --repeats" + (", or --check-heads 0" if checked else ""))


def _medians(fns: dict, timed, repeats: int, report) -> tuple[float, dict[str, float]]:
    """The first (warm-up) call's seconds, then each function's median over ``repeats`` interleaved calls (so that
    drifts in clock or load hit all alike), after one untimed call each."""
    total = 1 + (repeats + 1) * len(fns)
    report("calls", 0, total)
    first = timed(fns["sparse"])  # warm-up; compiles the flex kernel for this shape
    done = 1
    for fn in fns.values():
        timed(fn)
        done += 1
        report("calls", done, total)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
            done += 1
            report("calls", done, total)
    return first, {name: statistics.median(t) for name, t in times.items()}


def _above_limit(dtype: str, dev) -> str:
    if dev.type == "cpu":
        return (f"the speedup exceeds 1/density: dense SDPA in {dtype} on this cpu is slower than its FLOPs predict "
                "(no fast path for this dtype here), so the ratio measures the baseline, not the skipping; compare "
                "against float32 on a CPU")
    return (f"the speedup exceeds 1/density: dense SDPA in {dtype} is slower here than its FLOPs predict, so the "
            "ratio measures the baseline, not the skipping")


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)

    return cpu_name()


# the block-sparse kernel's calibration grid (``diffprobe hardware calibrate``): self-attention tokens, head dim and
# kept density; KERNEL_HEADS heads, blocks of 64 (the kernel's default)
KERNEL_GRIDS = {"full": {"tokens": [256, 512, 1024, 4096], "d": [40, 64, 128], "density": [0.125, 0.25, 0.5, 1.0]},
                "quick": {"tokens": [1024, 4096], "d": [40, 64], "density": [0.25, 1.0]}}
KERNEL_HEADS = 4


def _timed_grid(grid: dict, axes: tuple[str, str, str], rate_of, stage: str, device: str, progress) -> dict:
    """``rate_of(a, b, c)`` at every point of a 3-axis ``grid`` (``progress(stage, done, total)`` after each), then
    the points far below their neighbours timed again, each keeping the higher rate
    (:func:`~diffprobe.hardware.steadiness.retime_dips`: a shared machine's slow second); the curve's axes,
    ``flops_per_s`` and ``retimed``."""
    from diffprobe.hardware.calibrate import synced
    from diffprobe.hardware.steadiness import retime_dips, speed_factor

    report = progress or (lambda *_: None)
    total, done = math.prod(len(grid[a]) for a in axes), 0
    rates = []
    with synced(device):  # on CUDA a timed run ends when the device has finished its calls, not each call
        for a in grid[axes[0]]:
            plane = []
            for b in grid[axes[1]]:
                row = []
                for c in grid[axes[2]]:
                    row.append(rate_of(a, b, c) * speed_factor())  # at the calibration's one speed
                    done += 1
                    report(stage, done, total)
                plane.append(row)
            rates.append(plane)
        rates, again = retime_dips(rates, lambda idx: rate_of(*(grid[x][i] for x, i in zip(axes, idx, strict=True)))
                                   * speed_factor())
    return {"axes": list(axes), **{x: list(grid[x]) for x in axes}, "flops_per_s": rates, "retimed": again}


def kernel_curve(grid: dict, dtype: str = "float32", device: str = "cpu", repeats: int = 3, block_size: int = 64,
                 progress=None) -> dict:
    """The block-sparse kernel's achieved FLOP/s over (tokens, head dim, kept density): kept FLOPs (4 x heads x
    tokens^2 x head dim x kept density, self-attention) over the kernel's seconds on a layout prepared once (as
    ``kernel_s``), the median of ``repeats`` runs (:func:`~diffprobe.hardware.calibrate.typical_seconds`); dips
    retimed (:func:`_timed_grid`). The backend is the one ``auto`` runs here; a mask that keeps every block runs it
    too (never dense SDPA, which the ``sdpa`` curve prices). ``progress(stage, done, total)``."""
    from diffprobe.hardware.calibrate import typical_seconds

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    inputs: dict[tuple[int, int], tuple] = {}  # q, k, v per (tokens, head dim), made once
    backend = []

    def rate(n: int, d: int, density: float) -> float:
        if (n, d) not in inputs:
            inputs.clear()
            inputs[n, d] = tuple(torch.randn(1, KERNEL_HEADS, n, d, generator=g).to(dev, DTYPES[dtype])
                                 for _ in range(3))
        q, k, v = inputs[n, d]
        nb = math.ceil(n / block_size)
        layout = BlockLayout(random_block_mask(KERNEL_HEADS, nb, nb, density, g).to(dev), n, n, block_size,
                             check_all_kept=False)
        backend.append(layout.backend)
        seconds = typical_seconds(lambda: block_sparse_attention(q, k, v, layout, block_size), repeats)
        return 4.0 * KERNEL_HEADS * n * n * d * layout.kept_fraction / seconds

    curve = _timed_grid(grid, ("tokens", "d", "density"), rate, "block-sparse kernel", device, progress)
    return {**curve, "backend": backend[-1], "block_size": block_size, "heads": KERNEL_HEADS}


# the block method's per-call index (its predictor and the kernel's layout) by self-attention tokens, head dim and
# batch x heads: the pooling reads Q and K whole, so the heads matter (past the caches, and the fresh pages of large
# copies, the cost per head grows: here 0.53 ms per head at 4096 tokens x 16 heads, 1.2 ms at 40)
INDEX_GRIDS = {"full": {"tokens": [256, 1024, 4096, 16384], "d": [40, 64, 128], "heads": [4, 16, 40]},
               "quick": {"tokens": [1024, 4096], "d": [64], "heads": [4, 16]}}
INDEX_TAU = 0.5  # the mass the timed index covers (its cost hardly depends on it: every key block is ranked)


def index_curve(grid: dict, dtype: str = "float32", device: str = "cpu", repeats: int = 3, block_size: int = 64,
                progress=None) -> dict:
    """What a ``block`` call spends before its kernel, by (tokens, head dim, batch x heads): the block index
    predicted (:func:`~diffprobe.attention.approx.block_index_function`: Q and K pooled, pooled scores, their
    softmax, key blocks ranked) and the kernel's layout built from it, as each call of a run does; the rate is the
    predictor's FLOPs (:func:`~diffprobe.attention.approx.predictor_flops`, what the run's calls count) over those
    seconds, the median of ``repeats`` runs; dips retimed (:func:`_timed_grid`). ``progress(stage, done, total)``."""
    from diffprobe.attention.approx import block_index_function, predictor_flops
    from diffprobe.hardware.calibrate import typical_seconds

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)

    def rate(n: int, d: int, heads: int) -> float:
        q, k = (torch.randn(1, heads, n, d, generator=g).to(dev, DTYPES[dtype]) for _ in range(2))
        fn = block_index_function(q, INDEX_TAU, block_size)

        def call():
            mask, counts, order, _ = fn(q, k, INDEX_TAU, block_size, None)
            BlockLayout(mask, n, n, block_size, check_all_kept=not q.is_cuda, lists=(counts, order))

        return predictor_flops(heads, n, n, d, block_size) / typical_seconds(call, repeats)

    curve = _timed_grid(grid, ("tokens", "d", "heads"), rate, "block index", device, progress)
    return {**curve, "block_size": block_size, "tau": INDEX_TAU}


def predicted(result: dict, preset) -> dict:
    """A bench point's kernel and dense SDPA seconds as ``preset``'s calibration predicts them (its ``block_sparse``
    and ``sdpa`` curves: :func:`~diffprobe.analyses.predict.attention_seconds`), each with its error against the
    measurement (predicted / measured - 1) and, where the calibration was measured on another machine, one line
    saying so."""
    from diffprobe.analyses.predict import attention_seconds
    from diffprobe.hardware.preset import calibration_mismatch

    cal = preset.calibration
    n, d, bh = result["tokens"], result["head_dim"], result["batch"] * result["heads"]
    kernel = attention_seconds(cal, n, n, d, bh, result["kept_density"])
    dense = attention_seconds(cal, n, n, d, bh)
    out = {"preset": preset.name, "kernel_s": kernel, "kernel_error": kernel / result["kernel_s"] - 1,
           "dense_s": dense, "dense_error": dense / result["dense_s"] - 1,
           "curve_backend": cal["block_sparse"].get("backend")}
    caveat = calibration_mismatch(cal)
    if out["curve_backend"] != result["backend"]:  # --backend forced another kernel, or every block kept (dense)
        caveat = "; ".join(filter(None, [caveat, f"the curve is the {out['curve_backend']} kernel's; this bench ran "
                                         f"{result['backend']}"]))
    if caveat:
        out["caveat"] = caveat
    return out


def kernel_preset(name: str, dtype: str, device: str):
    """The ``--hardware`` preset of a bench, checked before anything is timed: calibrated, with a block-sparse
    kernel curve, in this bench's dtype and on its kind of device."""
    from diffprobe.hardware.presets import get_preset

    preset = get_preset(name)
    cal = preset.calibration
    if not cal:
        raise DiffprobeError(f"--hardware {name} has no calibration: make one with `diffprobe hardware calibrate`")
    if "block_sparse" not in cal:
        raise DiffprobeError(f"--hardware {name} has no block-sparse kernel curve (calibrated before diffprobe "
                             "measured it): re-run `diffprobe hardware calibrate`")
    meta = cal["meta"]
    if meta.get("dtype") != dtype:
        raise DiffprobeError(f"--hardware {name} was calibrated in {meta.get('dtype')}; this bench runs {dtype} "
                             f"(--dtype {meta.get('dtype')}, or calibrate with --dtype {dtype})")
    if str(meta.get("device", "cpu")).split(":")[0] != device.split(":")[0]:
        raise DiffprobeError(f"--hardware {name} was calibrated on {meta.get('device')}; this bench runs on "
                             f"{device}")
    return preset
