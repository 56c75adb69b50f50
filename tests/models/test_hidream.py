"""HiDream-I1 (double and single streams with a sparse mixture of experts, four text encoders): parameter counts,
the tiny variant's records measured == analytic under a known routing, one MoE layer and one block hand-counted,
the MoE account, the size convention and bad inputs. Expected values come from tests/reference/params.py (layer
shapes) and hand formulas."""

import json
import math

import pytest
import torch
from torch.utils._python_dispatch import _disable_current_modes

from diffprobe.cli import main
from diffprobe.models.families.hidream import balanced_counts
from diffprobe.models.registry import build_components, count_params, get_spec
from diffprobe.run.profile import ProfileConfig, run_profile
from tests.models.test_dit import assert_records_agree, measured_and_analytic
from tests.reference import params as ref


def _params(name):
    return {k: count_params(v) for k, v in build_components(get_spec(name), "meta").items() if hasattr(v, "parameters")}


def test_parameter_counts_equal_the_layer_shape_derivation_and_the_model_cards():
    for name in ("hidream-i1-full", "hidream-i1-dev", "hidream-i1-fast"):  # one architecture, three defaults
        full = _params(name)
        assert full["transformer"] == ref.hidream(20, 128, 16, 32, 4096, 4096, 768 + 1280)
        assert full["text_encoder"] == ref.clip_text(768, 3072, 12, positions=248, projection=768)
        assert full["text_encoder_2"] == ref.clip_text(1280, 5120, 32, positions=248, projection=1280)
        assert full["text_encoder_3"] == ref.t5_encoder(4096, 10240, 64, 64, 24)
        assert full["text_encoder_4"] == ref.llama(4096, 14336, 32, 8, 128, 32)
    # the model cards: HiDream-I1 "17B"; Llama-3.1-8B 8.03 B
    assert round(full["transformer"] / 1e9) == 17 and round(full["text_encoder_4"] / 1e7) == 803
    tiny = _params("tiny-hidream")
    assert tiny["transformer"] == ref.hidream(4, 8, 2, 2, 32, 32, 64)
    assert tiny["text_encoder_4"] == ref.llama(32, 64, 4, 2, 8, 2)


def _round_robin_router(monkeypatch):
    """The router's choices made known: token t goes to experts (t*k + j) mod n, j < k (distinct for k <= n) — a
    balanced load, as analytic mode assumes. The router's ops run as they are; its indices are overwritten outside
    the tracer."""
    from diffusers.models.transformers.transformer_hidream_image import MoEGate

    forward = MoEGate.forward

    def known(self, hidden_states):
        idx, weight, aux = forward(self, hidden_states)
        with _disable_current_modes():
            tokens, k = idx.shape
            idx.copy_((torch.arange(tokens * k) % self.n_routed_experts).view(tokens, k))
        return idx, weight, aux

    monkeypatch.setattr(MoEGate, "forward", known)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        _round_robin_router(mp)
        return measured_and_analytic(tmp_path_factory, "tiny-hidream")


def test_measured_and_analytic_records_agree_under_a_known_routing(runs):
    # Llama's padding-mask tests (a sum and a compare, twice per call) on its two calls (prompt, negative prompt);
    # 4 MoE layers x 2 steps count the router's choices in the measured run
    assert_records_agree(runs["measured"], runs["analytic"], mask_tests=8, counts=8)


def test_one_moe_layer_hand_counted(runs):
    # 64 px: 16 image tokens, batch 2 (CFG) -> 32 token rows; D = 32; experts' SwiGLU width 2/3 of 128 rounded up to
    # 256 -> 256, the shared expert's 2/3 of 64 -> 256; top 2 of 4: 64 assignments, 16 per expert
    ops = runs["measured"].ops
    moe = ops[(ops["step"] == 0) & ops["module"].str.startswith("transformer.double_stream_blocks.0.block.ff_i")]
    by = moe.groupby("layer_type")["flops"].sum()
    rows, d, hidden, n_exp, k = 32, 32, 256, 4, 2

    def swiglu(tokens):  # three bias-free linears (w1, w3: D -> H; w2: H -> D)
        return 3 * 2 * tokens * d * hidden

    counts = balanced_counts(rows * k, n_exp)
    assert counts == [16] * 4
    assert by["moe_expert"] == sum(swiglu(c) for c in counts)
    assert by["moe_shared"] == swiglu(rows)
    # the router: a linear D -> experts (2·rows·D·n), a softmax (5 per element, the formula registry's count),
    # top-2 (ceil(log2 3) = 2 comparisons per score)
    router = moe[moe["layer_type"] == "moe_router"].set_index("op")["flops"]
    assert router["aten.linear.default"] == 2 * rows * d * n_exp
    assert router["aten.topk.default"] == rows * n_exp * 2
    # each expert ran on its tokens: the first linear's input rows
    w1 = moe[moe["module"].str.endswith(".w1") & moe["module"].str.contains(".experts.", regex=False)]
    assert [s[0][0] for s in w1["input_shapes"]] == counts


def test_one_double_block_attention_hand_counted(runs):
    # joint attention over 16 image tokens and 3 x 16 text tokens (T5, Llama's last layer, this block's Llama
    # layer; max_sequence_length 16), 4 heads of 8, batch 2: B·H·N²·(2d + 1)
    ops = runs["analytic"].ops
    score = ops[(ops["step"] == 0) & (ops["layer_type"] == "attn_score")]
    n = 16 + 3 * 16
    assert score.groupby("module")["flops"].sum().to_dict() == {
        f"transformer.{kind}_stream_blocks.{i}.block.attn1": 2 * 4 * n * n * (2 * 8 + 1)
        for kind in ("double", "single") for i in (0, 1)}
    assert set(score["attn_kind"]) == {"joint"} and set(score["level"]) == {"double.0", "double.1", "single.0",
                                                                            "single.1"}


def test_the_moe_account(runs, tmp_path):
    for mode, routing in (("measured", "measured"), ("analytic", "assumed")):
        moe = json.loads((runs[mode].to_dict() and json.dumps(runs[mode].to_dict())))["moe"]
        assert moe["routing"].startswith(routing)
        assert (moe["layers"], moe["experts"], moe["top_k"]) == (4, 4, 2)
        # per MoE layer, two of the four routed experts idle for a token: 2 x 3·D·H parameters
        assert moe["params_total"] - moe["params_active_per_token"] == 4 * 2 * 3 * 32 * 256
        assert moe["expert_load"]["max_load_share"] == moe["expert_load"]["min_load_share"] == 0.25
    findings = " ".join(runs["analytic"].to_dict()["findings"])
    assert "assumed balanced" in findings and "active per token" in findings


def test_the_pipeline_renders_the_size_asked_for(tmp_path):
    # HiDream's pipeline rescales every request to its default area (1024² px); diffprobe sets that area to the
    # size asked for: 64x32 px is 4x2 patches, padded (non-square) to the transformer's 16 (max_resolution 8x8)
    run = run_profile(ProfileConfig(model="tiny-hidream", steps=1, mode="analytic", height=64, width=32,
                                    out=str(tmp_path / "r")))
    den = run.ops[run.ops["stage"] == "denoiser"]
    proj = den[den["module"] == "transformer.x_embedder.proj"]
    assert proj["input_shapes"].iloc[0] == [[2, 16, 64], [32, 64], [32]]
    vae = run.ops[run.ops["stage"] == "vae_decoder"]
    assert vae["input_shapes"].iloc[0][0][-2:] == [64 // 8, 32 // 8]
    assert math.isclose(run.to_dict()["height"], 64)


def test_bad_sizes_refused(tmp_path, capsys):
    assert main(["profile", "--model", "tiny-hidream", "--mode", "analytic", "--height", "40",
                 "--out", str(tmp_path / "a")]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    # non-square beyond the padded length: 96x64 px is 6x4 = 24 patches > 16
    assert main(["profile", "--model", "tiny-hidream", "--mode", "analytic", "--height", "96", "--width", "64",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "at most 16" in err and "Traceback" not in err


def test_parameters_by_role_split_the_mixture_of_experts():
    from diffprobe.models.params import params_by_module

    roles = params_by_module(get_spec("hidream-i1-full"))["transformer"]["by_role"]
    d, layers = 2560, 16 + 32
    assert roles["moe_router"] == layers * 4 * d  # a bias-free gate of 4 experts x D per MoE layer
    assert roles["moe_expert"] == layers * 4 * 3 * d * ref.swiglu_hidden(4 * d)
    assert roles["moe_shared"] == layers * 3 * d * ref.swiglu_hidden(4 * d // 2)
