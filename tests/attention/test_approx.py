"""Approximate attention: no-op values give dense output, outputs match an independent float64 reference, and
each method's FLOP account matches a hand count."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from diffprobe.attention.approx import ApproxAttention, account
from diffprobe.attention.core import CallInfo
from diffprobe.errors import DiffprobeError


def _qkv(nq=64, nk=32, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 2, nq, d, generator=g) * 1.5, torch.randn(1, 2, nk, d, generator=g) * 1.5,
            torch.randn(1, 2, nk, d, generator=g))


def _call(q, k):
    return CallInfo("unet.x.attn1", "self", q.shape[2], k.shape[2], q.shape[1])


def _reference(q, k, v, keep_fn, renormalize=True):
    """Masked attention in float64, written independently: keep_fn(p, s) -> bool mask."""
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    p = s.softmax(-1)
    keep = keep_fn(p, s)
    keep |= p == p.amax(-1, keepdim=True)
    if renormalize:
        p2 = torch.where(keep, p, torch.zeros_like(p))
        p2 = p2 / p2.sum(-1, keepdim=True)
    else:
        p2 = torch.where(keep, p, torch.zeros_like(p))
    return p2 @ v, int(keep.sum())


@pytest.mark.parametrize("method, noop", [("threshold", 0.0), ("topk", 32), ("predicted", 0.0), ("block", 1.0)])
def test_noop_parameter_is_dense(method, noop):
    q, k, v = _qkv()
    a = ApproxAttention(method, noop, block=16)
    out = a.core(q, k, v, None, _call(q, k))
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    assert a.calls[0]["kept"] == a.calls[0]["entries"] and a.calls[0]["flops"] == a.calls[0]["dense_flops"]


@pytest.mark.parametrize("renormalize", [True, False])
def test_threshold_and_topk_match_float64_reference(renormalize):
    q, k, v = _qkv()
    for method, value, keep_fn in [
        ("threshold", 0.05, lambda p, s: p >= 0.05),
        ("topk", 5, lambda p, s: s >= s.topk(5, dim=-1).values[..., -1:]),
    ]:
        a = ApproxAttention(method, value, renormalize=renormalize)
        out = a.core(q, k, v, None, _call(q, k))
        ref, kept = _reference(q, k, v, keep_fn, renormalize)
        assert (out.double() - ref).abs().max() / ref.abs().max() < 1e-5
        assert a.calls[0]["kept"] == kept
    assert 0 < a.calls[0]["kept"] < a.calls[0]["entries"]


@pytest.mark.slow
def test_flop_accounts_by_hand():
    q, k, v = _qkv(nq=64, nk=32, d=8)  # B·H = 2, 64 × 32 scores per head
    scores = 2 * 64 * 32
    dense = (2 * scores * 8 + scores) + 5 * scores + 2 * scores * 8  # score (+ scale), softmax, P·V = 155648
    a = ApproxAttention("topk", 8)
    a.core(q, k, v, None, _call(q, k))
    assert a.calls[0]["dense_flops"] == dense == 155648
    assert a.calls[0]["kept"] == 2 * 64 * 8 and a.calls[0]["flops"] == dense // 4  # a quarter of the keys kept
    p = ApproxAttention("predicted", 0.05, rank=4)
    p.core(q, k, v, None, _call(q, k))
    # K projection 2·BH·Nk·d·r + estimated scores 2·BH·Nq·Nk·r + their softmax 5·BH·Nq·Nk
    assert p.calls[0]["predictor_flops"] == 2 * 2 * 32 * 8 * 4 + 2 * scores * 4 + 5 * scores == 57344
    b = ApproxAttention("block", 0.5, block=16)
    b.core(q, k, v, None, _call(q, k))
    # pool K (BH·Nk·d) and Q (BH·Nq·d) + block scores 2·BH·qb·kb·d + their softmax 5·BH·qb·kb, qb = 4, kb = 2
    assert b.calls[0]["predictor_flops"] == 2 * 32 * 8 + 2 * 64 * 8 + 2 * 2 * 4 * 2 * 8 + 5 * 2 * 4 * 2 == 1872
    assert b.calls[0]["kept"] % (16 * 16) == 0  # whole blocks only
    acc = account(a.calls + b.calls)
    assert acc["dense_flops"] == 2 * dense and acc["share_saved"] == pytest.approx(1 - acc["flops"] / (2 * dense))


def test_block_keeps_the_blocks_holding_the_mass():
    # keys 0..15 match queries 0..15 strongly, keys 16..31 match queries 16..31: a block-diagonal pattern
    d = 8
    base = torch.zeros(32, d)
    base[:16, 0], base[16:, 1] = 4.0, 4.0
    q = base.view(1, 1, 32, d)
    k, v = q.clone(), torch.randn(1, 1, 32, d)
    a = ApproxAttention("block", 0.9, block=16)
    out = a.core(q, k, v, None, _call(q, k))
    assert a.calls[0]["kept"] == 2 * 16 * 16  # the two diagonal blocks
    # renormalized, it runs on the block-sparse kernel: each query block attends to its own key block alone
    assert a.calls[0]["kernel"] == "cpp"
    qd, kd, vd = q.double(), k.double(), v.double()
    ref = torch.cat([((qd[:, :, i:i + 16] @ kd[:, :, i:i + 16].transpose(-1, -2)) / math.sqrt(d)).softmax(-1)
                     @ vd[:, :, i:i + 16] for i in (0, 16)], dim=2)
    assert torch.allclose(out.double(), ref, rtol=0, atol=1e-5)
    # not renormalized, the kept probabilities keep their dense values: the masked dense path
    n = ApproxAttention("block", 0.9, block=16, renormalize=False)
    out = n.core(q, k, v, None, _call(q, k))
    assert n.calls[0]["kernel"] == "masked-dense" and n.calls[0]["kept"] == 2 * 16 * 16
    p = ((qd @ kd.transpose(-1, -2)) / math.sqrt(d)).softmax(-1)
    diag = torch.block_diag(torch.ones(16, 16), torch.ones(16, 16)).double()
    assert torch.allclose(out.double(), (p * diag) @ vd, rtol=0, atol=1e-5)


def test_block_on_the_kernel_matches_masked_attention_with_ragged_blocks():
    q, k, v = _qkv(nq=100, nk=70, d=16, seed=4)  # 7 query blocks and 5 key blocks of 16, both ragged
    a = ApproxAttention("block", 0.6, block=16)
    out = a.core(q, k, v, None, _call(q, k))
    mask = a.block_index(q, k)[0][0]  # the tiles it chose (which tiles is tested above); their attention, in float64
    tok = mask.repeat_interleave(16, 2).repeat_interleave(16, 3)[:, :, :100, :70]
    s = (q.double() @ k.double().transpose(-1, -2)) / 4.0
    ref = s.masked_fill(~tok, float("-inf")).softmax(-1) @ v.double()
    assert float((out.double() - ref).abs().max()) < 1e-5
    assert a.calls[0]["kept"] == int(tok.sum())


@pytest.mark.parametrize("method, value, message", [
    ("threshold", 1.0, "outside [0, 1)"), ("topk", 0, "at least 1"), ("block", 0.0, "outside (0, 1]"),
    ("bogus", 1, "unknown method"),
])
def test_bad_parameters(method, value, message):
    with pytest.raises(DiffprobeError, match=re.escape(message)):
        ApproxAttention(method, value)


def test_warming_compiles_the_kernel_even_when_a_mask_keeps_everything(monkeypatch):
    import diffprobe.attention.kernels as kernels

    seen = []
    real = kernels.block_sparse_attention
    monkeypatch.setattr(kernels, "block_sparse_attention",
                        lambda q, k, v, layout, b, **kw: seen.append(layout.backend) or real(q, k, v, layout, b, **kw))
    q, k, v = _qkv(nq=64, nk=64, d=8)
    a = ApproxAttention("block", 0.999999, block=16)  # keeps (nearly) every block of this diffuse attention
    a.core(q, k, v, None, _call(q, k))
    assert seen == ["dense"]  # this step: all kept, so dense SDPA; nothing compiled
    seen.clear()
    a.warming = True
    a.core(q, k, v, None, _call(q, k))
    assert seen == ["cpp", "dense"]  # warming: also one call on a partial mask, which builds the kernel


def test_kept_counts_stay_on_the_device_until_read():
    q, k, v = _qkv(nq=64, nk=64, d=8)
    a = ApproxAttention("block", 0.5, block=16)
    a.core(q, k, v, None, _call(q, k))
    assert isinstance(a.recorded[0]["kept"], torch.Tensor)  # no sync in the call
    c = a.calls[0]  # read: an int, and the FLOPs follow from it
    assert isinstance(c["kept"], int) and c["kept"] % (16 * 16) == 0
    assert c["flops"] == round(c["dense_flops"] * c["kept"] / c["entries"]) + c["predictor_flops"]


@pytest.mark.slow
def test_block_masks_reused_across_steps(tmp_path):
    # --mask-interval 2: each layer predicts its block mask at steps 0 and 2 and reuses it at steps 1 and 3, so the
    # predictor runs half as often (every step has the same shapes) and a reused step's mask is its predictor's
    import json

    import numpy as np

    from diffprobe.cli import main
    from diffprobe.records.masks import MaskStore

    runs = {}
    for n in (1, 2):
        out = tmp_path / f"i{n}"
        assert main(["approx", "--model", "tiny", "--height", "128", "--width", "128", "--steps", "4", "--method",
                     "block", "--tau", "0.5", "--block", "32", "--mask-interval", str(n), "--out", str(out),
                     "-q"]) == 0
        runs[n] = (json.loads((out / "approx.json").read_text())["results"][1], MaskStore(out / "masks" /
                                                                                         "block_tau_0.5"))
    (one, _), (two, store) = runs[1], runs[2]
    assert two["predictor_flops"] == one["predictor_flops"] / 2
    by_layer: dict = {}
    for e in store.entries:
        by_layer.setdefault(e["layer"], {})[e["step"]] = store.block_mask(e, 32, 0.5)
    for steps in by_layer.values():
        assert np.array_equal(steps[1], steps[0]) and np.array_equal(steps[3], steps[2])


def test_block_method_leaves_short_key_calls_dense_without_the_predictor():
    # cross-attention over 77 text tokens has fewer keys than two 64-blocks: nothing to skip, no predictor run
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 256, 16, generator=g)
    k77, v77 = torch.randn(2, 4, 77, 16, generator=g), torch.randn(2, 4, 77, 16, generator=g)
    core = ApproxAttention("block", 0.3, block=64, backend="gather")
    out = core.core(q, k77, v77, None, CallInfo("attn2", "cross", 256, 77, 4, 0))
    assert torch.equal(out, F.scaled_dot_product_attention(q, k77, v77))
    call = core.calls[0]
    assert (call["predictor_flops"], call["kernel"], call["kept"]) == (0, "dense", 2 * 4 * 256 * 77)
    k, v = torch.randn(2, 4, 256, 16, generator=g), torch.randn(2, 4, 256, 16, generator=g)
    core.core(q, k, v, None, CallInfo("attn1", "self", 256, 256, 4, 0))
    assert core.calls[1]["predictor_flops"] > 0 and core.calls[1]["kernel"] != "dense"


@pytest.mark.slow
def test_profile_mask_interval_runs_the_predictor_every_n_steps(tmp_path):
    import diffprobe

    kw = dict(model="tiny", steps=4, sample_steps=0, height=128, width=128, approx="block=0.5")
    every = diffprobe.profile(**kw, out=str(tmp_path / "1")).to_dict()["approx"]
    half = diffprobe.profile(**kw, mask_interval=2, out=str(tmp_path / "2")).to_dict()["approx"]
    assert (every["mask_interval"], half["mask_interval"]) == (1, 2)
    # 4 UNet evaluations (DDIM): masks predicted at 0 and 2, reused at 1 and 3; every call has the same shapes
    p1, p2 = every["flops_by_layer_type"]["attn_predictor"], half["flops_by_layer_type"]["attn_predictor"]
    assert p1 > 0 and p2 == pytest.approx(p1 / 2, rel=1e-12)


@pytest.mark.slow
def test_the_predicted_block_index_compiled_and_eager_agree_with_its_mask():
    # predict_block_index is one function of tensors from Q, K to the kernel's block index (so CUDA can compile it
    # whole, no host sync); compiled here on the CPU, it must give the eager index, and the index must be its mask's
    from diffprobe.attention.approx import compiled_predictor, predict_block_index
    from diffprobe.timing.compiled import compiler_unavailable

    if compiler_unavailable("cpu"):
        pytest.skip(f"no C++ compiler for torch.compile here: {compiler_unavailable('cpu')}")
    q, k, _ = _qkv(nq=200, nk=168, d=16, seed=3)  # 7 query blocks and 6 key blocks of 32, both ragged
    for tau, text in ((0.5, None), (0.3, (0, 2))):
        mask, counts, order, kept = predict_block_index(q, k, tau, 32, text)
        compiled = compiled_predictor()(q, k, tau, 32, text)
        for got, want in zip(compiled, (mask, counts, order, kept), strict=True):
            assert torch.equal(got, want)
        if text:
            assert mask[..., :2].all()
        assert torch.equal(counts, mask.sum(-1).int())
        for (bi, hi, qi), n in zip(torch.cartesian_prod(*(torch.arange(s) for s in counts.shape)).tolist(),
                                   counts.flatten().tolist(), strict=True):
            assert order[bi, hi, qi, :n].tolist() == mask[bi, hi, qi].nonzero().flatten().tolist()
        tok = mask.repeat_interleave(32, 2).repeat_interleave(32, 3)[:, :, :200, :168]
        assert int(kept) == int(tok.sum())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the compiled predictor on the GPU "
                    "is checked wherever one is present")
def test_cuda_compiled_predictor_gives_the_eager_block_index():
    from diffprobe.attention.approx import compiled_predictor, predict_block_index

    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 5, 4096, 64, generator=g).cuda().half() for _ in range(2))
    eager = predict_block_index(q, k, 0.25, 64)
    compiled = compiled_predictor()(q, k, 0.25, 64)
    # the pooled mass in fp32 may round differently when fused: at most a few blocks at the tau boundary differ
    assert float((compiled[0] != eager[0]).float().mean()) < 1e-3
    assert torch.equal(compiled[1], compiled[0].sum(-1).int())


@pytest.mark.slow
def test_approx_runs_each_block_setting_once_per_mask_interval(tmp_path):
    # --mask-interval 1,2: the block setting twice, against one dense run; the interval-2 row's predictor runs at
    # steps 0 and 2 of 4 (half the FLOPs of predicting every step), its kept masks repeat in pairs, and a method
    # without a predictor (threshold) runs once
    import json

    from diffprobe.cli import main

    out = tmp_path / "run"
    assert main(["approx", "--model", "tiny", "--height", "128", "--width", "128", "--steps", "4", "--method",
                 "block,threshold", "--tau", "0.5", "--eps", "0.01", "--block", "32", "--mask-interval", "1,2",
                 "--out", str(out), "-q"]) == 0
    state = json.loads((out / "approx.json").read_text())
    assert (state["mask_interval"], state["mask_intervals"]) == (1, [1, 2])
    rows = {(r["method"], r.get("mask_interval")): r for r in state["results"]}
    assert sorted(rows, key=str) == sorted([("dense", None), ("block", 1), ("block", 2), ("threshold", None)],
                                           key=str)
    every, half = rows[("block", 1)], rows[("block", 2)]
    assert half["predictor_flops"] * 2 == every["predictor_flops"] > 0
    assert half["setting"] == "block=0.5 mask every 2" and half["image"] == "images/block_tau_0.5_every_2.png"
    assert (out / half["image"]).exists() and (out / "masks" / "block_tau_0.5_every_2").is_dir()
    assert main(["approx", "--model", "tiny", "--mask-interval", "0,2", "--out", str(tmp_path / "bad")]) == 2


def test_a_reused_block_index_reuses_its_kernel_layout(monkeypatch):
    # --mask-interval 2: at step 1 a layer reuses step 0's index, and with it the kernel layout built from it (on
    # CUDA the BlockMask: no conversion on reused steps); the output is still attention over step 0's tiles
    import diffprobe.attention.kernels as kernels

    built = []

    class Counting(kernels.BlockLayout):
        def __init__(self, *args, **kwargs):
            built.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(kernels, "BlockLayout", Counting)
    a = ApproxAttention("block", 0.5, block=16, mask_interval=2)
    q0, k0, v0 = _qkv(nq=64, nk=64, d=8, seed=1)
    q1, k1, v1 = _qkv(nq=64, nk=64, d=8, seed=2)
    a.core(q0, k0, v0, None, CallInfo("attn1", "self", 64, 64, 2, 0))
    mask0 = built[0]
    out1 = a.core(q1, k1, v1, None, CallInfo("attn1", "self", 64, 64, 2, 1))
    assert len(built) == 1  # step 1: no new layout
    tok = mask0.repeat_interleave(16, 2).repeat_interleave(16, 3)
    s = (q1.double() @ k1.double().transpose(-1, -2)) / math.sqrt(8)
    assert float((out1.double() - s.masked_fill(~tok, float("-inf")).softmax(-1) @ v1.double()).abs().max()) < 1e-5
    a.core(q1, k1, v1, None, CallInfo("attn1", "self", 64, 64, 2, 2))
    assert len(built) == 2  # step 2: predicted again, a new layout


def test_a_block_call_records_the_copies_dense_sdpa_does_not_make():
    """A diffusers processor hands Q, K, V as views of its (B, N, H x D) projections: the C++ kernel copies each to a
    contiguous fp32 tensor and writes its output head-major, which the processor's reshape then copies — four copies
    of B x H x N x D x 4 bytes; contiguous inputs give none; dense SDPA on the views writes the model's order."""
    from diffprobe.attention import kernels

    if kernels.cpp_build_error() is not None:
        pytest.skip("the C++ kernel does not build here")
    g = torch.Generator().manual_seed(0)
    b, n, h, d = 2, 256, 4, 16
    views = [torch.randn(b, n, h * d, generator=g).view(b, n, h, d).transpose(1, 2) for _ in range(3)]
    core = ApproxAttention("block", 0.3, block=64, backend="cpp")
    core.core(*views, None, CallInfo("attn1", "self", n, n, h, 0))
    assert core.calls[0]["kernel"] == "cpp" and core.calls[0]["copies"] == [b * h * n * d * 4] * 4
    core.core(*(x.contiguous() for x in views), None, CallInfo("attn1", "self", n, n, h, 1))
    assert core.calls[1]["copies"] == []
    assert F.scaled_dot_product_attention(*views).transpose(1, 2).is_contiguous()  # why dense pays none
