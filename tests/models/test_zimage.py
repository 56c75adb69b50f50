"""Z-Image (single-stream DiT with noise and context refiners, Qwen3 encoder): parameter counts, the tiny variant's
records measured == analytic, its attention hand-counted, CFG and bad inputs. Expected values come from
tests/reference/params.py (layer shapes) and hand formulas."""

import math

import pytest

from diffprobe.cli import main
from diffprobe.models.registry import build_components, count_params, get_spec
from diffprobe.models.tokenizer import load_tokenizer
from diffprobe.run.profile import ProfileConfig, run_profile
from tests.models.test_dit import assert_records_agree, measured_and_analytic
from tests.reference import params as ref


def _params(name):
    return {k: count_params(v) for k, v in build_components(get_spec(name), "meta").items() if hasattr(v, "parameters")}


def test_parameter_counts_equal_the_layer_shape_derivation_and_the_model_cards():
    full = _params("z-image-turbo")
    assert full["transformer"] == ref.zimage(3840, 30, 30, 2, 2560)
    assert full["text_encoder"] == ref.qwen3(2560, 9728, 32, 8, 128, 36)
    assert full["vae"] == ref.vae(latent=16, quant_convs=False)
    # the model cards: Z-Image "6B"; Qwen3-4B 4.0 B parameters, 3.6 B without the embedding
    assert round(full["transformer"] / 1e9) == 6
    assert round(full["text_encoder"] / 1e8) == 40 and round((full["text_encoder"] - 151936 * 2560) / 1e8) == 36
    tiny = _params("tiny-z-image")
    assert tiny["transformer"] == ref.zimage(32, 4, 2, 1, 32) and tiny["text_encoder"] == ref.qwen3(32, 64, 4, 2, 8, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return measured_and_analytic(tmp_path_factory, "tiny-z-image")


def test_measured_and_analytic_records_agree(runs):
    assert_records_agree(runs["measured"], runs["analytic"], mask_tests=4)  # two per Qwen3 call (one prompt)


def _caption_tokens(prompt: str) -> int:
    """The prompt's own tokens, as the pipeline keeps them: Qwen3's chat template, unpadded."""
    tok = load_tokenizer(get_spec("tiny-z-image").config("tokenizer"))
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return len(tok(text).input_ids)


def test_refiners_and_joint_layers_hand_counted(runs):
    # 64 px: latent 8x8, patch 2 -> 16 image tokens, padded to a multiple of 32; the caption's tokens likewise;
    # no CFG (guidance 0): batch 1, one sequence length, so no mask; 4 heads of 8. Scores: B*H*N*M*(2d + 1) (the
    # products and the 1/sqrt(d) scale).
    ops = runs["measured"].ops
    den = ops[(ops["stage"] == "denoiser") & (ops["step"] == 0) & (ops["layer_type"] == "attn_score")]
    img = 32
    cap = 32 * math.ceil(_caption_tokens(runs["measured"].config.prompt) / 32)

    def score(n):
        return 4 * n * n * (2 * 8 + 1)

    by = den.groupby("module").agg(flops=("flops", "sum"), kind=("attn_kind", "first"), level=("level", "first"))
    assert by.loc["transformer.noise_refiner.0.attention"].tolist() == [score(img), "self", "refine.0"]
    assert by.loc["transformer.context_refiner.0.attention"].tolist() == [score(cap), "self", "caption.0"]
    for i in range(2):
        assert by.loc[f"transformer.layers.{i}.attention"].tolist() == [score(img + cap), "joint", f"block.{i}"]
    assert set(ops.loc[ops["module"].str.contains("adaLN_modulation") & (ops["layer_type"] != "view"),
                       "layer_type"]) == {"modulation"}


def test_guidance_above_zero_runs_both_branches(tmp_path):
    off = run_profile(ProfileConfig(model="tiny-z-image", steps=1, mode="analytic", out=str(tmp_path / "off")))
    on = run_profile(ProfileConfig(model="tiny-z-image", steps=1, mode="analytic", guidance=1.5,
                                   out=str(tmp_path / "on")))
    assert off.to_dict()["cfg"] is False and on.to_dict()["cfg"] is True
    shapes = on.ops.loc[on.ops["module"] == "transformer.layers.0.attention.to_q", "input_shapes"].iloc[0]
    assert shapes[0][0] == 2  # the two branches in one batch


@pytest.mark.parametrize("argv, needle", [
    (["profile", "--model", "tiny-z-image", "--height", "72", "--mode", "analytic"], "multiple of 16"),
    (["profile", "--model", "tiny-z-image", "--approx", "deepcache=2", "--mode", "analytic"], "deepcache applies to"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, argv, needle):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_approximate_attention_keeps_the_caption_dense(tmp_path):
    # the main layers' joint attention over 32 (padded) image and 32 caption keys: a threshold method skips among
    # the image keys only, the noise and context refiners' self-attention anywhere
    d = run_profile(ProfileConfig(model="tiny-z-image", steps=2, approx="threshold=0.05",
                                  out=str(tmp_path))).to_dict()
    ap = d["approx"]
    assert "text keys are kept dense" in ap["note"]
    assert 0 < ap["attention_share_saved"] < 1
