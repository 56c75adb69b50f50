"""Probability statistics on hand-built attention with known answers; chunked equals unchunked."""

import math

import pytest
import torch

from diffprobe.attention.stats import HeadStats, chunk_rows, probabilities_in_chunks


def _stats(p, eps=(0.02, 0.005), taus=(0.9, 0.95), blocks=(32,)):
    s = HeadStats(p.shape[1], p.shape[-1], eps, taus, blocks)
    s.add(p)
    return s.result()


def test_uniform_rows():
    p = torch.full((1, 2, 10, 100), 0.01)
    for r in _stats(p):
        assert r["below_0.02"] == 1.0 and r["below_0.005"] == 0.0  # every entry is 0.01
        assert r["keys_0.9"] == 90 and r["keys_0.95"] == 95 and r["keys_frac_0.9"] == pytest.approx(0.9)
        assert r["entropy"] == pytest.approx(1.0)
        assert r["empty_blocks_32_0.02"] == 1.0 and r["empty_blocks_32_0.005"] == 0.0


def test_one_hot_rows():
    p = torch.zeros(2, 1, 8, 100)
    p[..., torch.arange(8), torch.arange(8) * 3] = 1.0
    (r,) = _stats(p)
    assert r["below_0.02"] == pytest.approx(99 / 100) and r["keys_0.9"] == 1 and r["entropy"] == pytest.approx(0)


def test_block_diagonal_pattern():
    # 64 queries × 64 keys; each row spreads its mass uniformly over the 32 keys of its own block
    p = torch.zeros(1, 1, 64, 64)
    p[..., :32, :32] = 1 / 32
    p[..., 32:, 32:] = 1 / 32
    (r,) = _stats(p, eps=(1e-3,), taus=(0.9,), blocks=(32, 16))
    assert r["empty_blocks_32_0.001"] == 0.5  # 2 of 4 blocks all zero
    assert r["blocks_32_0.9"] == 0.5  # 1 of 2 key blocks covers each query block's mass
    assert r["empty_blocks_16_0.001"] == 0.5  # 8 of 16 16×16 blocks are zero
    assert r["blocks_16_0.9"] == 0.5  # 2 of 4 key blocks (each holding 1/2) needed for 0.9


def test_ragged_edge_blocks_count_as_blocks():
    p = torch.full((1, 1, 40, 40), 1 / 40)  # 40 tokens, blocks of 32: a full and a partial block each way
    (r,) = _stats(p, eps=(1e-3,), taus=(0.9, 0.8), blocks=(32,))
    # key block 0 holds 32/40 = 0.8 of every row's mass, key block 1 the other 0.2
    assert r["blocks_32_0.8"] == 0.5 and r["blocks_32_0.9"] == 1.0 and r["empty_blocks_32_0.001"] == 0.0


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 200, 16, generator=g) * 2, torch.randn(2, 3, 150, 16, generator=g) * 2
    blocks = (32, 64)
    whole = HeadStats(3, 150, (1e-2, 1e-3), (0.9, 0.99), blocks)
    chunked = HeadStats(3, 150, (1e-2, 1e-3), (0.9, 0.99), blocks)
    chunks = list(probabilities_in_chunks(q, k, blocks, max_elements=64 * 150 * 6))
    assert len(chunks) == math.ceil(200 / 64) and chunks[0].shape[2] == 64
    for p in chunks:
        chunked.add(p)
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 4.0, dim=-1)  # float64 reference
    whole.add(ref)
    for a, b in zip(chunked.result(), whole.result(), strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_chunk_rows_bound_memory():
    rows = chunk_rows(16384, 16384, 2 * 5, (32, 64, 128), max_elements=2**22)
    assert rows % 128 == 0 and rows * 16384 * 10 <= 2**22 or rows == 128
