"""Block-sparse attention against a float64 masked reference, on both CPU backends (compiled FlexAttention and the
eager gather path) and on CUDA where a device is present: random inputs, all kept, one block per row, ragged edges
(96×96 latents), rows with nothing kept, half precision; which backend runs; bad input named."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffprobe.attention.kernels import BlockLayout, block_sparse_attention, masked_reference, resolve_backend
from diffprobe.errors import DiffprobeError


def _inputs(n, m, d=40, dv=40, b=2, h=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, d, generator=g), torch.randn(b, h, m, d, generator=g),
            torch.randn(b, h, m, dv, generator=g))


def _rel(out, ref):
    return float((out.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-12))


BACKENDS = ["flex", "gather", "cpp"]


def test_the_reference_itself_against_a_loop_over_queries():
    # the float64 reference every kernel check (and `kernels bench`) relies on, against the definition written out
    # one query at a time: keys of the query's kept key blocks, softmax over them, weighted sum of their values
    q, k, v = _inputs(50, 37, d=8, dv=5, b=1, h=2)
    mask = torch.rand(1, 2, 4, 3, generator=torch.Generator().manual_seed(7)) < 0.5
    mask[0, 1, 2] = False  # an empty row
    ref = masked_reference(q, k, v, mask, 16, max_elements=100)  # small chunks: several per call
    for h in range(2):
        for i in range(50):
            keys = [j for j in range(37) if mask[0, h, i // 16, j // 16]]
            if not keys:
                assert torch.all(ref[0, h, i] == 0)
                continue
            s = torch.stack([q[0, h, i].double() @ k[0, h, j].double() for j in keys]) / math.sqrt(8)
            want = (s.softmax(0)[:, None] * v[0, h, keys].double()).sum(0)
            assert torch.allclose(ref[0, h, i], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, m, bs, d", [(64, 64, 16, 40), (100, 70, 16, 64), (9216 // 16, 9216 // 16, 64, 80),
                                         (130, 200, 32, 160)])
@pytest.mark.slow
def test_matches_float64_reference(n, m, bs, d, backend):
    q, k, v = _inputs(n, m, d, d)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 3, math.ceil(n / bs), math.ceil(m / bs), generator=g) < 0.4
    mask[..., 0] = True  # every row keeps something here; empty rows are tested below
    assert _rel(block_sparse_attention(q, k, v, mask, bs, backend=backend), masked_reference(q, k, v, mask, bs)) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_all_kept_is_dense_sdpa_and_one_block_per_row(backend):
    q, k, v = _inputs(96, 96)
    full = torch.ones(1, 1, 6, 6, dtype=torch.bool)  # (1, 1, …) broadcasts over batch and heads
    dense = F.scaled_dot_product_attention(q, k, v).double()
    assert _rel(block_sparse_attention(q, k, v, full, 16, backend=backend), dense) < 1e-5
    diag = torch.eye(6, dtype=torch.bool).view(1, 1, 6, 6)
    out = block_sparse_attention(q, k, v, diag, 16, backend=backend)
    ref = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + 16], k[:, :, i:i + 16], v[:, :, i:i + 16])
                     for i in range(0, 96, 16)], dim=2)  # each query block alone with its own key block
    assert _rel(out, ref.double()) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_ragged_96x96_latents_and_empty_rows(backend):
    n = 96 * 96 // 64  # 144 tokens, blocks of 64: the last block holds 16
    q, k, v = _inputs(n, n, b=1, h=2)
    mask = torch.tensor([[True, False, True], [False, False, False], [False, True, True]]).view(1, 1, 3, 3)
    out = block_sparse_attention(q, k, v, mask, 64, backend=backend)
    assert torch.all(out[:, :, 64:128] == 0)  # a query block with no kept key block outputs zeros
    assert _rel(out, masked_reference(q, k, v, mask, 64)) <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_half_precision_error_is_bounded(dtype, bound, backend):
    q, k, v = _inputs(128, 128)
    mask = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)) < 0.5
    mask[..., 0] = True
    ref = masked_reference(q, k, v, mask, 32)
    out = block_sparse_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, 32, backend=backend)
    assert out.dtype == dtype
    # bfloat16 keeps 8 bits of mantissa (2^-8 ≈ 4e-3 per rounding), float16 11 (≈ 5e-4)
    assert _rel(out, ref) < bound


def test_which_backend_runs():
    assert resolve_backend("cpu", 64, "auto", all_kept=True) == "dense"
    assert resolve_backend("cpu", 64, "gather", all_kept=True) == "gather"
    assert resolve_backend("cpu", 64, "flex", all_kept=True) == "flex"
    assert resolve_backend("cpu", 64) == "cpp"  # the C++ kernel is the CPU's default
    from torch.utils._python_dispatch import TorchDispatchMode

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    q, k, v = _inputs(64, 64)
    mask = torch.eye(4, dtype=torch.bool).view(1, 1, 4, 4)
    with Passthrough():  # torch.compile cannot trace under a dispatch mode (the op tracer is one): eager gather
        assert resolve_backend("cpu", 16) == "gather"
        out = block_sparse_attention(q, k, v, mask, 16)
        with pytest.raises(DiffprobeError, match="TorchDispatchMode"):
            block_sparse_attention(q, k, v, mask, 16, backend="flex")
    assert _rel(out, masked_reference(q, k, v, mask, 16)) <= 1e-5
    with pytest.raises(DiffprobeError, match="multiple of 16"):
        resolve_backend("cuda", 24, "flex")
    with pytest.raises(DiffprobeError, match="unknown block-sparse backend 'fast'"):
        resolve_backend("cpu", 64, "fast")


def test_a_prepared_layout_serves_many_calls():
    q, k, v = _inputs(100, 100, b=1, h=2)
    mask = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(5)) < 0.5
    mask[..., 1] = True
    layout = BlockLayout(mask, 100, 100, 32)
    assert layout.backend == "cpp" and layout.kept_fraction == pytest.approx(float(mask.float().mean()))
    ref = masked_reference(q, k, v, mask, 32)
    for _ in range(2):
        assert _rel(block_sparse_attention(q, k, v, layout, 32), ref) <= 1e-5
    q2, k2, v2 = _inputs(100, 100, b=1, h=2, seed=9)  # same layout, other inputs
    assert _rel(block_sparse_attention(q2, k2, v2, layout, 32), masked_reference(q2, k2, v2, mask, 32)) <= 1e-5
    with pytest.raises(DiffprobeError, match="prepared for 100 query and 100 key tokens in blocks of 32, not 90"):
        block_sparse_attention(q[:, :, :90], k[:, :, :90], v[:, :, :90], layout, 32)
    with pytest.raises(DiffprobeError, match=r"must have shape \(1, 3, 4, 4\)"):
        block_sparse_attention(*_inputs(100, 100, b=1, h=3), layout, 32)  # 2 heads in the mask, 3 in q
    with pytest.raises(DiffprobeError, match="must be torch.bool"):
        block_sparse_attention(q, k, v, mask.tolist(), 32)
    with pytest.raises(DiffprobeError, match="one device"):
        block_sparse_attention(q, k, v, mask.to("meta"), 32)


def test_without_the_all_kept_check_a_full_mask_runs_on_the_kernel():
    q, k, v = _inputs(96, 96, b=1, h=2)
    full = torch.ones(1, 2, 3, 3, dtype=torch.bool)
    layout = BlockLayout(full, 96, 96, 32, check_all_kept=False)  # no device sync: the kernel, not dense SDPA
    assert layout.backend == "cpp"
    assert _rel(block_sparse_attention(q, k, v, layout, 32), F.scaled_dot_product_attention(q, k, v).double()) < 1e-5


def test_cpp_query_tiles_of_blocks_sharing_their_kept_keys():
    # the C++ kernel runs consecutive query blocks that keep the same key blocks as one tile (up to 256 rows): runs
    # of equal rows, a longer run than one tile holds (blocks of 16: 16 per tile), a row keeping the same count but
    # other blocks, an empty row inside a run, a ragged last block, a mask broadcast over heads
    n, m, bs = 600, 200, 16  # 38 query blocks (the last of 8 tokens), 13 key blocks (the last of 8)
    q, k, v = _inputs(n, m, d=24, dv=20, b=2, h=3, seed=11)
    mask = torch.zeros(1, 1, 38, 13, dtype=torch.bool)
    mask[..., 0:20, [0, 3, 4, 12]] = True  # 20 equal rows: a full tile of 16 and one of 4
    mask[..., 20, [1, 3, 4, 12]] = True  # the same count, other blocks
    mask[..., 21:25, 5:9] = True
    mask[..., 23, :] = False  # empty, between equal rows
    mask[..., 25:38, :] = True  # every block, to the ragged end
    out = block_sparse_attention(q, k, v, mask, bs, backend="cpp")
    assert torch.all(out[:, :, 23 * bs:24 * bs] == 0)
    assert _rel(out, masked_reference(q, k, v, mask, bs)) <= 1e-5


def test_a_cpp_build_that_fails_leaves_auto_on_another_backend(monkeypatch):
    import diffprobe.attention.kernels as kernels

    def broken():
        raise RuntimeError("Error building extension 'diffprobe_block_sparse': ld: cannot find -lgomp\nmore")

    kernels.cpp_build_error.cache_clear()
    monkeypatch.setattr(kernels, "cpp_module", broken)
    try:
        assert resolve_backend("cpu", 64) in ("flex", "gather")
        with pytest.raises(DiffprobeError, match=r"cpp backend cannot run here: its build failed \(Error building "
                                                 r"extension 'diffprobe_block_sparse': ld: cannot find -lgomp\)$"):
            resolve_backend("cpu", 64, "cpp")
    finally:
        kernels.cpp_build_error.cache_clear()


def test_the_cpp_kernel_runs_its_loop_on_every_torch_thread():
    """Built without OpenMP, ATen's parallel_for (a pragma in a header) runs the whole kernel on one thread: twice
    as slow as dense SDPA on two cores with nothing wrong in its output, so only this catches it."""
    from diffprobe.attention.kernels import cpp_module

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert cpp_module().parallel_threads(64) == 2
        torch.set_num_threads(1)
        assert cpp_module().parallel_threads(64) == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the GPU path (FlexAttention's Triton "
                    "kernel) is checked wherever one is present")
@pytest.mark.parametrize("dtype, bound", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_cuda_path_matches_reference(dtype, bound):
    n, bs = 9000, 64  # ragged: 140 whole blocks of 64 and one of 40
    q, k, v = (t.cuda().to(dtype) for t in _inputs(n, n, 64, 64, b=1, h=2))
    mask = torch.rand(1, 2, 141, 141, device="cuda") < 0.25
    mask[:, :, 3] = False  # one empty row
    mask[:, :, 5] = False
    mask[:, :, 5, 7] = True  # one kept block in a row
    assert resolve_backend("cuda", bs) == "flex"
    out = block_sparse_attention(q, k, v, mask, bs)
    assert torch.all(out[:, :, 3 * bs:4 * bs] == 0)
    ref = masked_reference(q.cpu().float(), k.cpu().float(), v.cpu().float(), mask.cpu(), bs)
    assert _rel(out.cpu(), ref) < bound


@pytest.mark.parametrize("change, message", [
    (lambda q, k, v, m: (q, k, v, m.float()), "must be torch.bool of shape (2, 3, 4, 4)"),
    (lambda q, k, v, m: (q, k, v, m[..., :3]), "must have shape (2, 3, 4, 4)"),
    (lambda q, k, v, m: (q, k[:, :, :, :8], v, m), "mismatched shapes"),
    (lambda q, k, v, m: (q, k, v.double(), m), "share a dtype"),
])
def test_bad_input(change, message):
    q, k, v = _inputs(64, 64)
    mask = torch.ones(2, 3, 4, 4, dtype=torch.bool)
    with pytest.raises(DiffprobeError) as err:
        block_sparse_attention(*change(q, k, v, mask), 16)
    assert message in str(err.value)
    with pytest.raises(DiffprobeError, match="positive"):
        block_sparse_attention(q, k, v, mask, 0)
