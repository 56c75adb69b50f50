"""Exponents, crossover and attention memory: synthetic costs with known answers, and tiny's tokens²."""

import math

import pytest

from diffprobe.analyses import scaling
from diffprobe.run.profile import ProfileConfig, run_profile


def test_exponent_of_exact_power_laws():
    sides = [256, 512, 768, 1024, 1536, 2048]
    for k in (2.0, 4.0, 1.0):
        fit = scaling.fit_exponent(sides, [3.5 * s**k for s in sides])
        assert fit["k"] == pytest.approx(k) and fit["rms_log_residual"] == pytest.approx(0, abs=1e-9)
        assert math.exp(fit["b"]) == pytest.approx(3.5)
    mixed = scaling.fit_exponent(sides, [s**2 + 1e-6 * s**4 for s in sides])  # bends upward at 1000 px
    assert 2 < mixed["k"] < 4 and mixed["rms_log_residual"] > 0.05
    assert scaling.fit_exponent([512], [1.0]) is None and scaling.fit_exponent([1, 2], [0, 0]) is None


def test_crossover_interpolated_and_extrapolated():
    attn = lambda s: 1e-3 * s**4  # noqa: E731
    conv = lambda s: s**2  # noqa: E731 — equal where s² = 1e3
    sides = [8, 16, 32, 64]
    c = scaling.crossover(sides, [attn(s) for s in sides], [conv(s) for s in sides])
    assert c["side"] == pytest.approx(math.sqrt(1e3)) and not c["extrapolated"]
    sides = [4, 8, 16]
    c = scaling.crossover(sides, [attn(s) for s in sides], [conv(s) for s in sides])
    assert c["side"] == pytest.approx(math.sqrt(1e3)) and c["extrapolated"]
    assert scaling.crossover(sides, [conv(s) for s in sides], [attn(s) for s in sides])["already_ahead"]
    assert scaling.crossover(sides, [s for s in sides], [s**2 for s in sides]) is None  # never crosses


def _attn(ops, layer_type, kind):
    rows = ops[(ops["stage"] == "denoiser") & (ops["layer_type"] == layer_type) & (ops["attn_kind"] == kind)]
    return int(rows["flops"].sum())


@pytest.mark.slow
def test_tiny_attention_scores_scale_exactly_with_tokens_squared(tmp_path):
    a = run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", height=64, width=64,
                                  out=str(tmp_path / "a"))).ops
    b = run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", height=128, width=128,
                                  out=str(tmp_path / "b"))).ops
    # twice the side: 4x the tokens at every level, so self-attention scores grow 16x, cross-attention 4x
    assert _attn(b, "attn_score", "self") == 16 * _attn(a, "attn_score", "self") > 0
    assert _attn(b, "attn_softmax", "self") == 16 * _attn(a, "attn_softmax", "self")
    assert _attn(b, "attn_score", "cross") == 4 * _attn(a, "attn_score", "cross")
    # largest score matrix: CFG batch 2 x 2 heads x 256 x 256 tokens (128 px -> 16x16 latent) in float32
    mem = scaling.attention_memory(b)
    assert mem["materialized_bytes"] == 2 * 2 * 256 * 256 * 4 and mem["shape"] == [2, 2, 256, 256]
    top = scaling.bottlenecks(b[b["stage"] == "denoiser"], "flops", 3)
    assert len(top) == 3 and top[0]["share"] >= top[1]["share"] >= top[2]["share"] > 0
