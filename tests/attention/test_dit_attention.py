"""Attention methods on diffusion transformers: joint attention keeps its text keys dense, no-op settings are
bit-identical to dense, the block-sparse kernel runs inside a tiny DiT, the sparsity probe sees joint calls."""

import math

import pytest
import torch

from diffprobe.attention.approx import ApproxAttention
from diffprobe.attention.core import CallInfo
from diffprobe.attention.kernels import masked_reference
from diffprobe.run.approx import run_approx
from diffprobe.run.profile import ProfileConfig, run_profile


def _qkv(n, d=16, b=1, h=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("where", ["start", "end"])
def test_block_method_keeps_text_key_blocks_and_matches_the_float64_reference(where):
    # 96 image + 20 text keys, blocks of 16: the text spans key blocks 0-1 (Flux, text first) or 6-7 (SD3, last)
    n, nt, bs = 116, 20, 16
    q, k, v = _qkv(n)
    text = slice(0, nt) if where == "start" else slice(n - nt, n)
    k[:, :, text] *= 0.01  # text keys score low: a mass-based method alone would drop them
    core = ApproxAttention("block", 0.3, block=bs, backend="gather", save_masks=True)
    out = core.core(q, k, v, None, CallInfo("transformer_blocks.0.attn", "joint", n, n, 2, 0, "double.0", text))
    mask = core.masks[0]["blocks"][(bs, 0.3)]
    kb = math.ceil(n / bs)
    text_blocks = list(range(text.start // bs, math.ceil(text.stop / bs)))
    assert mask[..., text_blocks].all()  # every query block reads every text block
    assert not mask.all()  # and the image blocks were pruned
    other = [j for j in range(kb) if j not in text_blocks]
    assert (~mask[..., other]).any()
    ref = masked_reference(q, k, v, mask, bs)
    assert float((out.double() - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_threshold_keeps_every_text_key_and_self_attention_does_not():
    n, nt = 64, 8
    q, k, v = _qkv(n, seed=1)
    k[:, :, :nt] = -5 * q[:, :, :1].expand(-1, -1, nt, -1)  # text keys with very low scores
    joint = ApproxAttention("threshold", 0.02)
    joint.core(q, k, v, None, CallInfo("a", "joint", n, n, 2, 0, "double.0", slice(0, nt)))
    plain = ApproxAttention("threshold", 0.02)
    plain.core(q, k, v, None, CallInfo("a", "self", n, n, 2, 0, "block.0"))
    kept_joint, kept_plain = joint.calls[0]["kept"], plain.calls[0]["kept"]
    assert kept_joint >= 2 * n * nt  # B * H * queries * text keys at least
    assert kept_joint > kept_plain


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_noop_settings_are_bit_identical_to_dense_on_joint_attention(tmp_path, model):
    r = run_approx(ProfileConfig(model=model, steps=2), {"block": [1.0], "threshold": [0.0], "topk": [1000]},
                   out=str(tmp_path))
    rows = {(x["method"], x["value"]): x for x in r["results"]}
    for key in (("block", 1.0), ("threshold", 0.0), ("topk", 1000)):
        assert rows[key]["identical"] and rows[key]["attention_share_saved"] == 0.0, key
    assert any("text keys are kept dense" in n for n in r["notes"])  # said in the output


@pytest.mark.slow
def test_block_sparse_kernel_inside_a_tiny_dit(tmp_path):
    # tiny-flux at 256 px: 16x16 packed latent -> 256 image tokens + 16 text tokens, blocks of 64: 5 key blocks
    d = run_profile(ProfileConfig(model="tiny-flux", height=256, width=256, steps=2, approx="block=0.3",
                                  out=str(tmp_path))).to_dict()
    ap = d["approx"]
    assert "cpp" in ap["kernel"] or "gather" in ap["kernel"]  # the block-sparse kernel, not dense SDPA
    assert 0 < ap["attention_share_saved"] < 1 and ap["kept_fraction"] < 1
    assert ap["flops_saved_by_stage"]["denoiser"] > 0
    assert "text keys are kept dense" in ap["note"]
    assert set(ap["flops_saved_by_stage"]) <= {"denoiser"} or all(
        v == 0 for k, v in ap["flops_saved_by_stage"].items() if k != "denoiser")


def test_sparsity_probe_sees_every_joint_call_by_block(tmp_path, capsys):
    import json

    import pandas as pd

    from diffprobe.cli import main

    assert main(["sparsity", "--model", "tiny-flux", "--steps", "2", "--blocks", "16", "--out",
                 str(tmp_path / "s"), "--format", "json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    table = pd.read_parquet(tmp_path / "s" / "sparsity.parquet")
    # 1 double + 2 single blocks, 4 heads, 2 steps: every call probed, all joint, over 16 image + 16 text keys
    assert set(table["attn_kind"]) == {"joint"} and set(table["level"]) == {"double.0", "single.0", "single.1"}
    assert len(table) == 3 * 4 * 2 and set(table["k_tokens"]) == {32}
    assert "joint" in d["summary"]["64x64"]["by_kind"]


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux", "tiny-flux2", "tiny-qwen-image", "tiny-hidream",
                                   "tiny-z-image"])
def test_every_joint_call_is_told_exactly_its_text_keys(model):
    """At 64 px every tiny DiT has 16 image tokens (Z-Image pads them to 32): a joint call's keys past them are its
    text, at the family's end of the sequence (HiDream: T5's 16 and two Llama layers' 16 each; Qwen-Image: the
    prompt's own tokens; Z-Image: the caption padded to a multiple of 32)."""
    import torch.nn.functional as F

    from diffprobe.attention.core import installed_in
    from diffprobe.models.registry import get_spec
    from diffprobe.run.pipeline import PipelineCall, build_pipeline

    cfg = ProfileConfig(model=model, steps=1).resolved()
    pipe = build_pipeline(cfg, get_spec(cfg.model))
    seen = []

    def core(q, k, v, mask, call):
        seen.append((call.kind, k.shape[2], call.text_keys))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    with torch.inference_mode(), installed_in(pipe, core):
        PipelineCall(cfg)(pipe)
    joint = [s for s in seen if s[0] == "joint"]
    assert joint
    where, image = get_spec(model).family.text_keys, 32 if model == "tiny-z-image" else 16
    for _, nk, text in joint:
        nt = nk - image
        assert nt > 0 and text == (slice(0, nt) if where == "start" else slice(image, nk)), (nk, text)
