import pytest

from diffprobe.records.formulas import FORMULAS, TensorMeta, lookup, register, sdpa_parts, sdpa_unfused_bytes


def T(*shape, itemsize=4):
    return TensorMeta(tuple(shape), "float32", itemsize)


def cost(op, args, out, **kwargs):
    return lookup(op).fn(args, kwargs, out)


def test_conv_counts_two_flops_per_mac_plus_bias():
    # x (1, 3, 8, 8), w (16, 3, 3, 3), stride 1 pad 1 -> out (1, 16, 8, 8)
    c = cost("aten.convolution.default", [T(1, 3, 8, 8), T(16, 3, 3, 3), T(16), [1, 1], [1, 1], [1, 1], False,
                                          [0, 0], 1], T(1, 16, 8, 8))
    macs = 1 * 16 * 8 * 8 * 3 * 3 * 3  # outputs x (C_in x kh x kw)
    assert (c.flops, c.macs) == (2 * macs + 16 * 8 * 8, macs)


def test_grouped_strided_conv():
    # groups 2: w (8, 2, 3, 3) over x (1, 4, 8, 8), stride 2 -> out (1, 8, 4, 4)
    c = cost("aten.convolution.default", [T(1, 4, 8, 8), T(8, 2, 3, 3), None, [2, 2], [1, 1], [1, 1], False,
                                          [0, 0], 2], T(1, 8, 4, 4))
    assert c.macs == 8 * 4 * 4 * 2 * 9 and c.flops == 2 * c.macs


def test_linear_family():
    assert cost("aten.mm.default", [T(5, 7), T(7, 3)], T(5, 3)).flops == 2 * 5 * 7 * 3
    assert cost("aten.addmm.default", [T(3), T(5, 7), T(7, 3)], T(5, 3)).flops == 2 * 5 * 7 * 3 + 5 * 3
    lin = cost("aten.linear.default", [T(2, 10, 7), T(3, 7), T(3)], T(2, 10, 3))
    assert (lin.flops, lin.macs) == (2 * 20 * 7 * 3 + 20 * 3, 20 * 7 * 3)
    assert cost("aten.bmm.default", [T(4, 5, 7), T(4, 7, 3)], T(4, 5, 3)).flops == 2 * 4 * 5 * 7 * 3


def test_baddbmm_as_the_classic_attention_processor_calls_it():
    # beta=0 (the input is never read), alpha=scale: 2bmkn + one scale multiply per output
    c = cost("aten.baddbmm.default", [T(4, 5, 3), T(4, 5, 7), T(4, 7, 3)], T(4, 5, 3), beta=0, alpha=0.125)
    assert c.flops == 2 * 4 * 5 * 7 * 3 + 4 * 5 * 3
    assert c.bytes_read == (4 * 5 * 7 + 4 * 7 * 3) * 4


def test_sdpa_parts_and_unfused_bytes():
    q, k, v = T(2, 8, 64, 40), T(2, 8, 77, 40), T(2, 8, 77, 40)
    parts = sdpa_parts(q, k, v, has_mask=False)
    scores = 2 * 8 * 64 * 77
    assert parts["score"].flops == 2 * scores * 40 + scores
    assert parts["softmax"].flops == 5 * scores
    assert parts["pv"].flops == 2 * scores * 40
    fused_io = sum((p.bytes_read or 0) + (p.bytes_written or 0) for p in parts.values())
    assert fused_io == (q.nbytes + k.nbytes + v.nbytes) + 2 * 8 * 64 * 40 * 4
    unfused = sdpa_unfused_bytes(q, k, v)
    assert sum(r + w for r, w in unfused.values()) == fused_io + 4 * scores * 4  # S and P written and read


def test_norms_softmax_activations():
    x = T(2, 32, 8, 8)
    assert cost("aten.native_group_norm.default", [x, T(32), T(32), 2, 32, 64, 8, 1e-5], x).flops == 8 * x.numel
    assert cost("aten.native_layer_norm.default", [T(4, 10), [10], None, None, 1e-5], T(4, 10)).flops == 6 * 40
    assert cost("aten._softmax.default", [T(3, 9), -1, False], T(3, 9)).flops == 5 * 27
    assert cost("aten.silu.default", [x], x).flops == 5 * x.numel
    assert cost("aten.add.Tensor", [x, x], x).flops == x.numel


def test_resampling():
    x = T(1, 4, 8, 8)
    assert cost("aten.upsample_nearest2d.default", [x, [16, 16]], T(1, 4, 16, 16)).flops == 0
    assert cost("aten.avg_pool2d.default", [x, [2, 2]], T(1, 4, 4, 4)).flops == 4 * 8 * 8  # one add per input
    assert cost("aten.upsample_bilinear2d.default", [x, [16, 16], False], T(1, 4, 16, 16)).flops == 7 * 4 * 256


def test_views_cost_nothing_and_embedding_reads_only_gathered_rows():
    assert cost("aten.view.default", [T(4, 10), [40]], T(40)).bytes_read == 0
    e = cost("aten.embedding.default", [T(49408, 768), TensorMeta((1, 77), "int64", 8)], T(1, 77, 768))
    assert e.flops == 0 and e.bytes_read == 77 * 8 + 77 * 768 * 4


def test_registry_refuses_duplicates_and_unknown_kinds():
    with pytest.raises(ValueError, match="twice"):
        register("elementwise", "add")(lambda a, k, o: None)
    with pytest.raises(ValueError, match="unknown op kind"):
        register("magic", "frobnicate")
    assert "frobnicate" not in FORMULAS


def test_einsum_by_hand():
    a, b = TensorMeta((2, 3, 4), "float32", 4), TensorMeta((2, 4, 5), "float32", 4)
    out = TensorMeta((2, 3, 5), "float32", 4)
    fn = lookup("aten.einsum.default").fn
    assert fn(("bij,bjk->bik", [a, b]), {}, out).flops == 2 * 2 * 3 * 4 * 5  # a batched matmul: 240
    assert fn(("bij,bjk->bik", [a, b]), {}, out).macs == 2 * 3 * 4 * 5
    c = TensorMeta((2, 3, 4), "float32", 4)
    assert fn(("...j,...j->...j", [a, c]), {}, a).flops == 2 * 3 * 4  # elementwise product: 1 per element
    assert fn(("bij,bjk", [a, b]), {}, out).flops == 240  # implicit output


def test_linear_solve_counts_the_lu_and_the_substitutions():
    # UniPC's corrector: a 2x2 system, one right-hand side: 2/3 * 8 (floored) for LU + 2 * 4 * 1 substitutions
    assert cost("aten.linalg_solve.default", [T(2, 2), T(2)], T(2)).flops == 5 + 8
    # batched, 3 right-hand sides: per system 2/3 * 27 = 18, + 2 * 9 * 3 = 54
    assert cost("aten.linalg_solve.default", [T(4, 3, 3), T(4, 3, 3)], T(4, 3, 3)).flops == 4 * (18 + 54)
