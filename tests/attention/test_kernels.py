"""Block-sparse attention against a float64 masked reference: random inputs, all kept, one block per row,
ragged edges (96×96 latents), rows with nothing kept; bad input named."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffprobe.attention.kernels import block_sparse_attention, masked_reference
from diffprobe.errors import DiffprobeError


def _inputs(n, m, d=40, dv=40, b=2, h=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, d, generator=g), torch.randn(b, h, m, d, generator=g),
            torch.randn(b, h, m, dv, generator=g))


def _rel(out, ref):
    return float((out.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("n, m, bs, d", [(64, 64, 16, 40), (100, 70, 16, 64), (9216 // 16, 9216 // 16, 64, 80),
                                         (130, 200, 32, 160)])
def test_matches_float64_reference(n, m, bs, d):
    q, k, v = _inputs(n, m, d, d)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 3, math.ceil(n / bs), math.ceil(m / bs), generator=g) < 0.4
    mask[..., 0] = True  # every row keeps something here; empty rows are tested below
    assert _rel(block_sparse_attention(q, k, v, mask, bs), masked_reference(q, k, v, mask, bs)) <= 1e-5


def test_all_kept_is_dense_sdpa_and_one_block_per_row():
    q, k, v = _inputs(96, 96)
    full = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    assert _rel(block_sparse_attention(q, k, v, full, 16), F.scaled_dot_product_attention(q, k, v).double()) < 1e-5
    diag = torch.eye(6, dtype=torch.bool).view(1, 1, 6, 6)
    out = block_sparse_attention(q, k, v, diag, 16)
    ref = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + 16], k[:, :, i:i + 16], v[:, :, i:i + 16])
                     for i in range(0, 96, 16)], dim=2)  # each query block alone with its own key block
    assert _rel(out, ref.double()) < 1e-5


def test_ragged_96x96_latents_and_empty_rows():
    n = 96 * 96 // 64  # 144 tokens, blocks of 64: the last block holds 16
    q, k, v = _inputs(n, n, b=1, h=2)
    mask = torch.tensor([[True, False, True], [False, False, False], [False, True, True]]).view(1, 1, 3, 3)
    out = block_sparse_attention(q, k, v, mask, 64)
    assert torch.all(out[:, :, 64:128] == 0)  # a query block with no kept key block outputs zeros
    assert _rel(out, masked_reference(q, k, v, mask, 64)) <= 1e-5


def test_half_precision_error_is_bounded():
    q, k, v = _inputs(128, 128)
    mask = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)) < 0.5
    mask[..., 0] = True
    ref = masked_reference(q, k, v, mask, 32)
    out = block_sparse_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 32)
    assert _rel(out, ref) < 3e-2  # bfloat16 keeps 8 bits of mantissa


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
