"""Block-sparse attention: softmax attention restricted to kept (query block × key block) tiles.

``block_sparse_attention(q, k, v, block_mask, block_size)`` takes SDPA's shapes — q (B, H, N, d), k (B, H, M, d),
v (B, H, M, dv) — and a boolean ``block_mask`` of shape (B, H, ceil(N/b), ceil(M/b)) (batch and heads may be 1 to
broadcast). Each query block attends only to the keys of its kept key blocks; the softmax is over those keys
alone. A query block with no kept key block outputs zeros (there is nothing to attend to). Ragged edges: the
last query/key block may be partial; its missing tokens are padding and never receive probability.

Backends (``backend=``; ``auto`` picks the first that applies — dense when every block is kept, then ``cpp`` on
the CPU, ``flex`` on CUDA, ``gather`` where no compiler can run; :func:`resolve_backend` says which):

* ``dense`` — a mask that keeps every block is dense attention: PyTorch's fused SDPA runs (under ``auto`` only).
* ``flex`` — PyTorch's FlexAttention, compiled (``torch.compile``): the kept blocks become a ``BlockMask``
  (per query block, the list of kept key blocks) and one fused kernel walks only those blocks with an online
  softmax — no score matrix in memory, work proportional to the kept blocks. On the CPU Inductor generates a C++
  kernel (the same blocked GEMM + online-softmax loop as PyTorch's CPU flash SDPA, at the mask's block size;
  head dims are zero-padded to a multiple of 16 for it); on a CUDA device a Triton kernel. The first call of each
  shape compiles (seconds; cached on disk by Inductor). Needs a C++ compiler on the CPU; on CUDA a block size that
  is a multiple of 16.
* ``cpp`` — CPU only: a C++ extension (``attention/cpp/block_sparse.cpp``, built on first use with the machine's
  g++ for the CPU capability torch reports, cached under the diffprobe cache folder) that walks each query block's
  kept key blocks with an online softmax, BLAS ``sgemm`` for the two products of a tile and ATen's vectorized
  exp, query blocks spread over torch's threads (OpenMP); consecutive query blocks that keep the same key blocks
  run as one tile of up to 256 rows. fp32 inside (other dtypes are converted on the way in and out).
* ``gather`` — eager PyTorch, no compiler: per query block the kept key blocks are gathered into one slab and
  SDPA runs batched over query blocks. Correct everywhere (also inside a TorchDispatchMode, where
  ``torch.compile`` cannot run), but the gather copies K and V once per query block, so it gains little
  (docs/benchmarks.md).

Why both: FlexAttention gives the GPU path (Triton) from the same mask; on the CPU its C++ template builds its
micro-GEMMs with a fixed register blocking and reaches 0.63 of dense SDPA's efficiency in float32 and 0.29 in
bfloat16 on the AMD EPYC measured, where diffprobe's own C++ kernel, on BLAS GEMMs and OpenMP threads, reaches
0.84–1.05 in both (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from diffprobe.errors import DiffprobeError
from diffprobe.timing.compiled import compiler_unavailable

BACKENDS = ("auto", "flex", "gather", "cpp")


def _check_block_size(block_size) -> None:
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size <= 0:
        raise DiffprobeError(f"block size must be a positive number of tokens, got {block_size!r}")


def _check_qkv(q, k, v) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise DiffprobeError("q, k and v must be 4-D (batch, heads, tokens, head_dim), got "
                             f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise DiffprobeError(f"mismatched shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; "
                             "expected q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv)")
    if len({q.device, k.device, v.device}) > 1:
        raise DiffprobeError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if len({q.dtype, k.dtype, v.dtype}) > 1:
        raise DiffprobeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def _check_mask(block_mask, batch: int | None, heads: int | None, q_tokens: int, k_tokens: int,
                block_size: int) -> None:
    qb, kb = math.ceil(q_tokens / block_size), math.ceil(k_tokens / block_size)
    expected = (batch or "B", heads or "H", qb, kb)
    shown = "(" + ", ".join(str(e) for e in expected) + ")"
    if not isinstance(block_mask, torch.Tensor) or block_mask.dtype != torch.bool:
        got = f"dtype {block_mask.dtype}" if isinstance(block_mask, torch.Tensor) else type(block_mask).__name__
        raise DiffprobeError(f"block_mask must be torch.bool of shape {shown}, got {got}")
    if block_mask.dim() != 4 or block_mask.shape[2:] != (qb, kb) or any(
            e is not None and s not in (1, e) for s, e in zip(block_mask.shape[:2], (batch, heads), strict=True)):
        raise DiffprobeError(f"block_mask must have shape {shown} (batch and heads may be 1), "
                             f"got {tuple(block_mask.shape)}")


class BlockLayout:
    """A block mask prepared once for the kernel: validated, its backend chosen and (for ``flex``) converted to
    FlexAttention's ``BlockMask``. Pass it as ``block_mask`` to reuse one mask across calls without paying the
    conversion (and the device sync of the all-kept check) each time. With ``check_all_kept=False`` nothing syncs
    the device: a mask that keeps every block then runs on the sparse kernel rather than dense SDPA. ``lists``:
    the mask's :func:`kv_block_lists`, when the caller has them already (the block method's predictor computes
    them in the same compiled function as the mask)."""

    def __init__(self, block_mask: torch.Tensor, q_tokens: int, k_tokens: int, block_size: int, *,
                 backend: str = "auto", check_all_kept: bool = True,
                 lists: tuple[torch.Tensor, torch.Tensor] | None = None):
        _check_block_size(block_size)
        _check_mask(block_mask, None, None, q_tokens, k_tokens, block_size)
        self.mask, self.q_tokens, self.k_tokens, self.block_size = block_mask, q_tokens, k_tokens, block_size
        self.device = block_mask.device
        # whether every block is kept (then dense SDPA runs); reading it syncs a GPU, so a caller may skip it
        self.all_kept = bool(block_mask.all()) if check_all_kept else False
        self.backend = resolve_backend(self.device, block_size, backend, all_kept=self.all_kept)
        self.flex = to_flex_block_mask(block_mask, q_tokens, k_tokens, block_size, lists=lists) \
            if self.backend == "flex" else None
        self.cpp = (lists or kv_block_lists(block_mask)) if self.backend == "cpp" else None

    @property
    def kept_fraction(self) -> float:
        return float(self.mask.float().mean())


def resolve_backend(device: torch.device | str, block_size: int, backend: str = "auto",
                    all_kept: bool = False) -> str:
    """The backend :func:`block_sparse_attention` runs for these arguments: ``dense``, ``flex``, ``cpp`` or
    ``gather``."""
    if backend not in BACKENDS:
        raise DiffprobeError(f"unknown block-sparse backend {backend!r}; use one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    if backend == "gather":
        return "gather"
    if backend == "cpp":
        why = cpp_unavailable(device)
        if why:
            raise DiffprobeError(f"the cpp backend cannot run here: {why}")
        return "cpp"
    why_not = flex_unavailable(device, block_size)
    if backend == "flex":
        if why_not:
            raise DiffprobeError(f"the flex backend cannot run here: {why_not}")
        return "flex"
    if all_kept:
        return "dense"
    if device.type == "cpu" and not cpp_unavailable(device):  # faster than flex in fp32 and bf16 (benchmarks)
        return "cpp"
    return "gather" if why_not else "flex"


def flex_unavailable(device: torch.device, block_size: int) -> str | None:
    """Why compiled FlexAttention cannot run for this device and block size (None: it can)."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    if _get_current_dispatch_mode() is not None:
        return "a TorchDispatchMode is active (torch.compile cannot trace under one)"
    if device.type == "cuda":
        if block_size % 16:
            return f"block size {block_size} is not a multiple of 16 (the Triton kernel's smallest tile)"
        return None
    if device.type == "cpu":
        return compiler_unavailable("cpu")
    return f"no FlexAttention kernel for device type {device.type}"


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           block_mask: torch.Tensor | BlockLayout, block_size: int, *,
                           backend: str = "auto") -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v over the kept blocks only; see the module docstring. ``block_mask`` is a bool
    tensor (B, H, ceil(N/b), ceil(M/b)) or a :class:`BlockLayout` prepared from one (then ``backend`` is the
    layout's)."""
    _check_block_size(block_size)
    _check_qkv(q, k, v)
    b, h, n, _ = q.shape
    m = k.shape[2]
    if isinstance(block_mask, BlockLayout):
        layout = block_mask
        if (layout.q_tokens, layout.k_tokens, layout.block_size) != (n, m, block_size):
            raise DiffprobeError(f"the block layout was prepared for {layout.q_tokens} query and {layout.k_tokens} "
                                 f"key tokens in blocks of {layout.block_size}, not {n}, {m} and {block_size}")
        _check_mask(layout.mask, b, h, n, m, block_size)
    else:
        _check_mask(block_mask, b, h, n, m, block_size)
        layout = None
    mask = layout.mask if layout else block_mask
    if mask.device != q.device:
        raise DiffprobeError(f"q, k, v and block_mask must be on one device, got {q.device} and {mask.device}")
    if layout is None:
        layout = BlockLayout(block_mask, n, m, block_size, backend=backend)
    if layout.backend == "dense":  # nothing to skip: the dense fused kernel is the block-sparse kernel
        return F.scaled_dot_product_attention(q, k, v)
    if layout.backend == "flex":
        return _flex_attention(q, k, v, layout.flex, block_size)
    if layout.backend == "cpp":
        return _cpp_attention(q, k, v, layout.cpp, block_size)
    return _gather_attention(q, k, v, mask, block_size, math.ceil(n / block_size), math.ceil(m / block_size))


_COMPILED = {}


def _compiled_flex():
    if "flex" not in _COMPILED:
        from torch.nn.attention.flex_attention import flex_attention

        # every (shape, dtype) compiles once (dynamic=False: static shapes give the fastest kernels)
        raise_recompile_limits()
        _COMPILED["flex"] = torch.compile(flex_attention, dynamic=False)
    return _COMPILED["flex"]


def raise_recompile_limits() -> None:
    """Raise Dynamo's recompile limits, process-wide and only upwards, so that a run with many attention shapes (a
    UNet's levels, a benchmark grid, several τ) never silently falls back to eager code (eager FlexAttention
    materializes the scores)."""
    for name, value in (("recompile_limit", 512), ("accumulated_recompile_limit", 4096)):
        if getattr(torch._dynamo.config, name, value) < value:
            setattr(torch._dynamo.config, name, value)


def to_flex_block_mask(block_mask: torch.Tensor, n: int, m: int, block_size: int,
                       lists: tuple[torch.Tensor, torch.Tensor] | None = None):
    """A boolean (B, H, qb, kb) block mask as FlexAttention's ``BlockMask``: per query block, how many key blocks
    are kept and which (ascending), all as "partial" blocks with no mask function."""
    from torch.nn.attention.flex_attention import BlockMask

    counts, order = lists or kv_block_lists(block_mask)
    # forward only: skip the transposed (query-block) index that only the backward pass reads (0.2 ms a call)
    extra = {"compute_q_blocks": False} if _takes_compute_q_blocks() else {}
    return BlockMask.from_kv_blocks(counts.contiguous(), order, BLOCK_SIZE=block_size, seq_lengths=(n, m), **extra)


@functools.cache
def _takes_compute_q_blocks() -> bool:  # newer PyTorch only
    import inspect

    from torch.nn.attention.flex_attention import BlockMask

    return "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters


def _flex_attention(q, k, v, bm, block_size):
    if q.is_cuda:
        options = {}
        if block_size % 128:
            tile = min(64, block_size & -block_size)  # the Triton tiles must divide the mask's blocks
            options = {"BLOCK_M": tile, "BLOCK_N": tile}
    else:
        # no score or mask function: the C++ kernel skips evaluating them per score (3% at 4096 tokens); padding
        # keys of a ragged last block are still excluded (checked by the ragged tests)
        options = {"SKIP_MASK_SCORE": True}
        d = q.shape[-1]
        if d % 16:  # the C++ micro-GEMMs prefer head dims in whole 16-lanes: zero-pad q and k (q·kᵀ is unchanged,
            pad = (0, -d % 16)  # the scale stays 1/sqrt(d)); SD 1.5's head dim 40 -> 48 runs 5% faster
            return _compiled_flex()(F.pad(q, pad), F.pad(k, pad), v, block_mask=bm, scale=1 / math.sqrt(d),
                                    kernel_options=options)
    return _compiled_flex()(q, k, v, block_mask=bm, kernel_options=options or None)


def cpp_unavailable(device: torch.device) -> str | None:
    """Why the C++ extension cannot run for this device (None: it can)."""
    if device.type != "cpu":
        return f"it is a CPU kernel, not one for {device.type}"
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    if _get_current_dispatch_mode() is not None:
        return "a TorchDispatchMode is active (the op tracer: the eager gather path runs)"
    if not _ninja_available():
        return "ninja is not installed (torch builds C++ extensions with it: pip install ninja)"
    return compiler_unavailable("cpu") or cpp_build_error()


@functools.cache
def _ninja_available() -> bool:
    """torch's check, once per process: it runs ``ninja --version`` in a subprocess (≈ 1 ms, every attention call
    otherwise)."""
    from torch.utils.cpp_extension import is_ninja_available

    return is_ninja_available()


@functools.cache
def cpp_build_error() -> str | None:
    """Why the extension did not build or load (None: it did). Building it here, once per process, lets ``auto``
    fall back to another backend where the compiler or linker fails, rather than fail the run."""
    try:
        cpp_module()
    except Exception as e:  # noqa: BLE001 — any build or load error means the backend is unavailable
        lines = [line for line in str(e).splitlines() if line.strip()]
        return f"its build failed ({lines[0][:200] if lines else type(e).__name__})"
    return None


# compile flags per CPU capability (torch's ``get_cpu_capability``): ATen's vector types pick their instruction
# set from CPU_CAPABILITY; without it they compile to scalar code
_CAPABILITY_FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
                                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
                     "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]}


@functools.cache
def cpp_module():
    """The C++ extension's operators (``forward``, ``parallel_threads``), built once per machine kind and torch
    version (g++, about ten seconds), then loaded from the diffprobe cache folder."""
    import hashlib
    import os
    import shutil
    from importlib import resources
    from importlib.resources import as_file

    from torch.utils.cpp_extension import load

    from diffprobe.models.tokenizer import cache_dir

    cap = torch.backends.cpu.get_cpu_capability()
    # -fopenmp: ATen's at::parallel_for is an OpenMP pragma in a header; compiled without it the kernel runs on one
    # thread. The libgomp it links resolves to the one torch already loaded (same soname)
    flags = ["-O3", "-fopenmp", *_CAPABILITY_FLAGS.get(cap, [])]
    src = resources.files("diffprobe.attention").joinpath("cpp", "block_sparse.cpp")
    key = hashlib.sha256(src.read_bytes() + f"{torch.__version__} {cap} {flags}".encode()).hexdigest()[:12]
    build = cache_dir() / f"cpp-block-sparse-{key}"
    build.mkdir(parents=True, exist_ok=True)
    # built from a copy in the cache folder: ninja rebuilds when a source's path changes, so another checkout or
    # install of the same source (same key) would otherwise rebuild a library already there
    copy = build / "block_sparse.cpp"
    if not copy.exists() or copy.read_bytes() != src.read_bytes():
        with as_file(src) as path:
            tmp = build / f".block_sparse.{os.getpid()}.cpp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, copy)
    load(name=f"diffprobe_block_sparse_{key}", sources=[str(copy)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
         build_directory=str(build), verbose=False, is_python_module=False)
    return torch.ops.diffprobe_block_sparse


def kv_block_lists(block_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query block: how many key blocks are kept, and their indices first (ascending), as int32 — the block
    index both sparse kernels walk (FlexAttention's ``kv_num_blocks`` / ``kv_indices``)."""
    counts = block_mask.sum(-1, dtype=torch.int32).contiguous()
    order = torch.sort((~block_mask).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32).contiguous()
    return counts, order


def _cpp_attention(q, k, v, lists, block_size):
    counts, order = (x.contiguous() for x in lists)  # the C++ side reads them as dense int32 arrays
    dtype = q.dtype
    qf, kf, vf = (x.to(torch.float32).contiguous() for x in (q, k, v))
    out = cpp_module().forward(qf, kf, vf, counts, order, block_size, 1 / math.sqrt(q.shape[-1]))
    return out.to(dtype)


def _gather_attention(q, k, v, block_mask, block_size, qb, kb, max_elements: int = 2**24):
    """The eager path: kept key blocks gathered per query block, SDPA batched over query blocks."""
    b, h, n, d = q.shape
    m, dv = k.shape[2], v.shape[-1]
    bs = block_size
    mask = block_mask.expand(b, h, qb, kb)
    counts = mask.sum(-1)  # (B, H, qb) kept key blocks per query block
    kmax = int(counts.max()) if counts.numel() else 0
    out = torch.zeros(b, h, n, dv, dtype=q.dtype, device=q.device)
    if kmax == 0:
        return out
    # kept key-block indices first, in ascending order (a stable sort of "not kept")
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[..., :kmax]  # (B, H, qb, kmax)
    valid = torch.gather(mask, -1, order)  # (B, H, qb, kmax): False where a row has fewer than kmax blocks
    pad_m, pad_n = kb * bs - m, qb * bs - n
    kp = F.pad(k, (0, 0, 0, pad_m)).view(b, h, kb, bs, d)
    vp = F.pad(v, (0, 0, 0, pad_m)).view(b, h, kb, bs, dv)
    qp = F.pad(q, (0, 0, 0, pad_n)).view(b, h, qb, bs, d)
    key_ok = torch.ones(kb, bs, dtype=torch.bool, device=q.device)
    if pad_m:
        key_ok[-1, bs - pad_m:] = False  # padding keys of the ragged last block
    plain = bool(valid.all()) and not pad_m  # every row keeps kmax whole blocks: no mask needed
    chunk = max(1, max_elements // max(1, b * h * kmax * bs * max(d, dv)))  # query blocks per step
    for s0 in range(0, qb, chunk):
        e = min(qb, s0 + chunk)
        c = e - s0
        idx = order[:, :, s0:e].reshape(b, h, c * kmax)
        kg = torch.gather(kp, 2, idx[..., None, None].expand(b, h, c * kmax, bs, d))
        vg = torch.gather(vp, 2, idx[..., None, None].expand(b, h, c * kmax, bs, dv))
        # one SDPA call per query block, batched: (B·H·c, 1, bs, d) against its (kmax·bs) gathered keys
        qs = qp[:, :, s0:e].reshape(b * h * c, 1, bs, d)
        ks = kg.view(b * h * c, 1, kmax * bs, d)
        vs = vg.view(b * h * c, 1, kmax * bs, dv)
        if plain:
            o = F.scaled_dot_product_attention(qs, ks, vs)
        else:
            allowed = valid[:, :, s0:e, :, None] & key_ok[order[:, :, s0:e]]  # (B, H, c, kmax, bs)
            am = allowed.reshape(b * h * c, 1, 1, kmax * bs)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=am)
            empty = ~allowed.reshape(b * h * c, kmax * bs).any(-1)
            o[empty] = 0  # a query block with no kept key: nothing to attend to
        lo, hi = s0 * bs, min(n, e * bs)
        out[:, :, lo:hi] = o.view(b, h, c * bs, dv)[:, :, :hi - lo]
    return out


def masked_reference(q, k, v, block_mask, block_size, max_elements: int = 2**24) -> torch.Tensor:
    """The same attention in float64 with a dense token mask: the reference the kernel is checked against.
    Computed in whole query blocks, at most ``max_elements`` scores at a time, on the inputs' device."""
    b, h, n, d = q.shape
    m = k.shape[2]
    mask = block_mask.expand(b, h, -1, -1)
    kt, vd = k.double().transpose(-1, -2), v.double()
    per = max(1, max_elements // max(1, b * h * m * block_size))  # query blocks per chunk
    out = []
    for s0 in range(0, mask.shape[2], per):
        rows = slice(s0 * block_size, min(n, (s0 + per) * block_size))
        # the token mask of these rows, indexed block by block (never larger than rows x keys)
        qb = torch.arange(rows.start, rows.stop, device=mask.device) // block_size
        kb = torch.arange(m, device=mask.device) // block_size
        tok = mask[:, :, qb][:, :, :, kb]
        s = (q[:, :, rows].double() @ kt) / math.sqrt(d)
        p = torch.softmax(s.masked_fill(~tok, float("-inf")), dim=-1).nan_to_num(0.0)
        out.append(p @ vd)
    return torch.cat(out, dim=2)
