"""FLUX.2 (double and single streams with fused projections, step-wide modulation, Mistral-3 encoder, 2x2 latent
patches as channels): parameter counts, the tiny variant's records measured == analytic, its attention hand-counted,
bad inputs. Expected values come from tests/reference/params.py (layer shapes) and hand formulas."""

import pytest

from diffprobe.cli import main
from diffprobe.models.registry import build_components, count_params, get_spec
from tests.models.test_dit import assert_records_agree, measured_and_analytic
from tests.reference import params as ref


def _params(name):
    return {k: count_params(v) for k, v in build_components(get_spec(name), "meta").items() if hasattr(v, "parameters")}


def test_parameter_counts_equal_the_layer_shape_derivation_and_the_model_cards():
    full = _params("flux2-dev")
    assert full["transformer"] == ref.flux2(48, 128, 8, 48, 15360)
    assert full["text_encoder"] == ref.mistral3(5120, 32768, 32, 8, 128, 40, 1024, 4096, 16, 24)
    assert full["vae"] == ref.vae(latent=32)  # its batch norm of the latent patches keeps statistics, no weights
    # the model cards: FLUX.2-dev "32 billion parameters"; Mistral-Small-3.1 "24B"
    assert round(full["transformer"] / 1e9) == 32 and round(full["text_encoder"] / 1e9) == 24
    tiny = _params("tiny-flux2")
    assert tiny["transformer"] == ref.flux2(4, 8, 1, 2, 96, guidance_ch=32)
    assert tiny["text_encoder"] == ref.mistral3(32, 64, 4, 2, 8, 3, 16, 32, 2, 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return measured_and_analytic(tmp_path_factory, "tiny-flux2")


def test_measured_and_analytic_records_agree(runs):
    assert_records_agree(runs["measured"], runs["analytic"], mask_tests=4)  # two per Mistral call (one prompt)


def test_blocks_and_joint_attention_hand_counted(runs):
    # 64 px: VAE 8x, 2x2 patches as channels -> 4x4 = 16 image tokens; 64 text tokens; guidance embedded: batch 1;
    # 4 heads of 8; no mask (the text encoder's padding is not passed on). Scores: H*N*N*(2d + 1), N = 16 + 64.
    ops = runs["measured"].ops
    den = ops[(ops["stage"] == "denoiser") & (ops["step"] == 0)]
    assert set(den["cfg"]) == {""}
    score = den[den["layer_type"] == "attn_score"]
    n = 16 + 64
    by = score.groupby("module")["flops"].sum().to_dict()
    assert by == {m: 4 * n * n * 17 for m in ("transformer.transformer_blocks.0.attn",
                                                "transformer.single_transformer_blocks.0.attn",
                                                "transformer.single_transformer_blocks.1.attn")}
    assert set(score["attn_kind"]) == {"joint"} and set(score["tokens"]) == {16}
    assert {"double.0", "single.0", "single.1", "in", "embed", "out"} <= set(den["level"])
    # the modulation of every block, computed once per step: 6D for each stream of the double blocks, 3D for the
    # single ones, from the D-wide timestep-and-guidance embedding (silu, then a linear without bias)
    mod = den[den["module"].str.contains("modulation") & (den["op"] == "aten.linear.default")]
    assert mod["flops"].sum() == 2 * 32 * (6 * 32 + 6 * 32 + 3 * 32)
    assert set(mod["layer_type"]) == {"modulation"} and set(mod["level"]) == {"embed"}


@pytest.mark.parametrize("argv, needle", [
    (["profile", "--model", "tiny-flux2", "--height", "72", "--mode", "analytic"], "multiple of 16"),
    (["profile", "--model", "tiny-flux2", "--approx", "teacache=0.1"], "teacache applies to"),
])
def test_bad_inputs_are_one_line(tmp_path, capsys, argv, needle):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
