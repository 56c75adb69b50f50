"""Diffusion transformers (PixArt, SD3, Flux, Sana): parameter counts, the account of a tiny run, measured ==
analytic, and their bad inputs. Expected values come from tests/reference (layer shapes) and hand formulas."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import diffprobe
from diffprobe.cli import main
from diffprobe.models.registry import build_components, count_params, get_spec
from diffprobe.run.profile import ProfileConfig, run_profile
from tests.reference import params as ref

T5XXL = 4_762_310_656
CLIP_L, CLIP_L_PROJ, CLIP_G_PROJ = 123_060_480, 123_650_304, 694_659_840
VAE4, VAE16 = 83_653_863, 83_819_683
# Parameter counts of the published checkpoints (diffusers format), per component.
PUBLISHED = {
    "pixart-alpha": {"transformer": 611_349_152, "text_encoder": T5XXL, "vae": VAE4},
    "pixart-sigma": {"transformer": 610_856_096, "text_encoder": T5XXL, "vae": VAE4},
    "sd3-medium": {"transformer": 2_028_328_000, "text_encoder": CLIP_L_PROJ, "text_encoder_2": CLIP_G_PROJ,
                   "text_encoder_3": T5XXL, "vae": VAE16},
    "sd35-large": {"transformer": 8_056_627_520, "text_encoder": CLIP_L_PROJ, "text_encoder_2": CLIP_G_PROJ,
                   "text_encoder_3": T5XXL, "vae": VAE16},
    # keras-hub's SD3.5-medium preset states 3,371,793,763 parameters for CLIP-L, CLIP-G, MMDiT-X and VAE, counting
    # the 384x384x1536 position table diffusers keeps as a buffer (its SD3-medium preset, 2,987,080,931, gives
    # SD3-medium's published 2,028,328,000 the same way, with a 192x192 table)
    "sd35-medium": {"transformer": 3_371_793_763 - 384 * 384 * 1536 - (CLIP_L_PROJ + CLIP_G_PROJ + VAE16),
                    "text_encoder": CLIP_L_PROJ, "text_encoder_2": CLIP_G_PROJ, "text_encoder_3": T5XXL,
                    "vae": VAE16},
    "flux-dev": {"transformer": 11_901_408_320, "text_encoder": CLIP_L, "text_encoder_2": T5XXL, "vae": VAE16},
    "flux-schnell": {"transformer": 11_891_178_560, "text_encoder": CLIP_L, "text_encoder_2": T5XXL, "vae": VAE16},
    "sana-1600m": {"transformer": 1_604_462_752, "text_encoder": 2_614_341_888, "vae": 312_250_275},
}
_T5 = ref.t5_encoder(4096, 10240, 64, 64, 24)
_CLIPS = {"text_encoder": ref.clip_text(768, 3072, 12, projection=768),
          "text_encoder_2": ref.clip_text(1280, 5120, 32, projection=1280), "text_encoder_3": _T5}
_VAE16 = ref.vae(latent=16, quant_convs=False)
# The same counts derived from layer shapes alone (DC-AE, Sana's VAE, is checked against the published count only)
DERIVED = {
    "pixart-alpha": {"transformer": ref.pixart(16, 72, 28, 4096, conditions=True), "text_encoder": _T5,
                     "vae": ref.vae()},
    "pixart-sigma": {"transformer": ref.pixart(16, 72, 28, 4096), "text_encoder": _T5, "vae": ref.vae()},
    "sd3-medium": {"transformer": ref.sd3(24, 64, 24, 4096, 2048, 1536), **_CLIPS, "vae": _VAE16},
    "sd35-large": {"transformer": ref.sd3(38, 64, 38, 4096, 2048, 2432, qk_norm=True), **_CLIPS, "vae": _VAE16},
    "sd35-medium": {"transformer": ref.sd3(24, 64, 24, 4096, 2048, 1536, qk_norm=True, dual=13), **_CLIPS,
                    "vae": _VAE16},
    "flux-dev": {"transformer": ref.flux(24, 128, 19, 38, 4096, 768), "text_encoder": ref.clip_text(768, 3072, 12),
                 "text_encoder_2": _T5, "vae": _VAE16},
    "flux-schnell": {"transformer": ref.flux(24, 128, 19, 38, 4096, 768, guidance=False),
                     "text_encoder": ref.clip_text(768, 3072, 12), "text_encoder_2": _T5, "vae": _VAE16},
    "sana-1600m": {"transformer": ref.sana(70, 32, 20, 112, 20, 2304),
                   "text_encoder": ref.gemma2(2304, 9216, 8, 4, 256, 26)},
}
TINY = ("tiny-pixart", "tiny-sd3", "tiny-sd35", "tiny-flux", "tiny-sana")


def _params(name):
    comps = build_components(get_spec(name), "meta")
    return {k: count_params(v) for k, v in comps.items() if isinstance(v, torch.nn.Module)}


def test_shape_derivation_matches_published_counts():
    for name, derived in DERIVED.items():
        assert derived == {k: v for k, v in PUBLISHED[name].items() if k in derived}, name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_embedded_transformers_have_published_parameter_counts(name):
    assert _params(name) == PUBLISHED[name]


def test_tiny_variants_match_their_shape_derivations():
    t5 = ref.t5_encoder(32, 64, 4, 8, 2)
    clip = ref.clip_text(32, 64, 2)
    assert _params("tiny-pixart")["transformer"] == ref.pixart(4, 8, 2, 32)
    assert _params("tiny-pixart")["text_encoder"] == t5
    sd3 = _params("tiny-sd3")
    assert sd3["transformer"] == ref.sd3(4, 8, 2, 32, 64, 32, qk_norm=True)
    assert sd3["text_encoder_3"] == t5 and sd3["text_encoder"] == ref.clip_text(32, 64, 2, projection=32)
    assert sd3["vae"] == ref.vae((16, 32, 32, 32), layers=1, latent=16, quant_convs=False)
    assert _params("tiny-sd35")["transformer"] == ref.sd3(4, 8, 2, 32, 64, 32, qk_norm=True, dual=1)
    flux = _params("tiny-flux")
    assert flux["transformer"] == ref.flux(4, 8, 1, 2, 32, 32) and flux["text_encoder"] == clip
    sana = _params("tiny-sana")
    assert sana["transformer"] == ref.sana(4, 8, 4, 8, 2, 32, in_ch=8)
    assert sana["text_encoder"] == ref.gemma2(32, 64, 4, 2, 8, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each tiny DiT profiled measured (every step) and analytic, 2 steps at 64 px."""
    out = {}
    for name in TINY:
        base = tmp_path_factory.mktemp(name)
        common = dict(model=name, steps=2, sample_steps=0)
        out[name] = {mode: run_profile(ProfileConfig(mode=mode, out=str(base / mode), **common))
                     for mode in ("measured", "analytic")}
    return out


# ops whose records exist only where the data does: host->meta copies (transfers), tensor literals (lift_fresh)
# and transformers' test of whether the padding mask is all ones (its all() and the bool of it)
_DATA_ONLY = ("aten.all.default", "aten.is_nonzero.default")


def _without_mask_test(ops):
    """``ops`` less the test transformers' decoder-only encoders (Qwen3, Mistral) make of whether the padding mask is
    all ones (a sum and a compare per call), which needs the data: on meta the mask is kept, as in a measured run of
    a prompt shorter than the padded length. Returns the records kept and the number left out."""
    test = ops["stage"].str.startswith("text_encoder") & ops["op"].isin(["aten.sum.default", "aten.eq.Scalar"])
    return ops[~test], int(test.sum())


def measured_and_analytic(tmp_path_factory, model: str, steps: int = 2) -> dict:
    """A tiny model's profile, every step measured, and the same configuration analytic (``{mode: result}``)."""
    from diffprobe.run.profile import ProfileConfig, run_profile

    return {mode: run_profile(ProfileConfig(model=model, steps=steps, sample_steps=0, mode=mode,
                                            out=str(tmp_path_factory.mktemp(mode))))
            for mode in ("measured", "analytic")}


def _without_mask_conversion(ops):
    """``ops`` less the conversion of the text encoder's padding mask to bool (0 FLOPs), which an analytic run of a
    family that knows the mask is all ones does not make (Qwen-Image: it passes no mask, the decision transformers
    takes after its test). Returns the records kept and the number left out."""
    conv = ((ops["stage"] == "text_encoder") & (ops["op"] == "aten.to.device") & (ops["flops"] == 0)
            & ops["module"].str.endswith("language_model") & (ops["dtype"] == "int64"))
    return ops[~conv], int(conv.sum())


def _without_scalar_fills(measured, analytic):
    """Both runs' records less their assignments of a Python scalar into a slice (``mask[..., 0] = True``), which
    PyTorch makes a ``fill_`` of the slice on the CPU and, on meta, a ``scalar_tensor`` copied (``copy_``) into it:
    the same write, by two paths. Returns the records kept and the number of assignments left out (the same in
    both, or the test fails)."""
    fills = measured["op"] == "aten.fill_.Tensor"
    scalars = analytic.index[analytic["op"] == "aten.scalar_tensor.default"]
    copies = []
    for i in scalars:  # the copy_ into the slice follows the scalar's view and expand in the same module
        after = analytic.loc[i:].iloc[1:6]
        hit = after[(after["op"] == "aten.copy_.default") & (after["module"] == analytic.at[i, "module"])]
        copies.extend(hit.index[:1])
    assert len(copies) == len(scalars) == int(fills.sum())
    return measured[~fills], analytic.drop(index=[*scalars, *copies]), len(copies)


def assert_records_agree(measured_run, analytic_run, mask_tests: int = 0, mask_conversions: int = 0,
                         counts: int = 0, scalar_fills: int = 0) -> None:
    """A measured run's records equal an analytic run's, but for views, transfers, data-only ops, the encoder's
    ``mask_tests`` padding-mask tests (:func:`_without_mask_test`), ``mask_conversions`` mask conversions
    (:func:`_without_mask_conversion`), ``counts`` counts of a router's choices (a mixture of experts' bincount,
    which an analytic run, with no values, does not make) and ``scalar_fills`` scalars assigned into slices
    (:func:`_without_scalar_fills`); every op has a formula."""
    measured, left_out = _without_mask_test(measured_run.ops)
    assert left_out == mask_tests
    counted = measured["op"] == "aten.bincount.default"
    assert counted.sum() == counts
    measured = measured[~counted]
    if mask_conversions:
        measured, converted = _without_mask_conversion(measured)
        assert converted == mask_conversions
    analytic = analytic_run.ops
    measured, analytic, fills = _without_scalar_fills(measured, analytic)
    assert fills == scalar_fills
    pd.testing.assert_frame_equal(_comparable(measured), _comparable(analytic))
    # data-only ops (a test of a mask's values) run in an analytic run too where the data sits on the CPU (Qwen-Image's
    # caption mask); the totals agree without them
    def computed(ops):
        return ops["flops"].sum() - ops.loc[ops["op"].isin(_DATA_ONLY), "flops"].sum()

    assert computed(measured) == computed(analytic)
    assert not measured_run.unsupported


def _comparable(ops):
    keep = ~ops["layer_type"].isin(["view", "transfer"]) & ~ops["op"].isin(_DATA_ONLY)
    cols = ["op", "part", "stage", "step", "module", "level", "tokens", "layer_type", "attn_kind", "input_shapes",
            "output_shapes", "flops", "macs_conv_linear", "bytes_read", "bytes_written"]
    return ops.loc[keep, cols].reset_index(drop=True).astype(str)


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_measured_and_analytic_records_agree(runs, name):
    measured, analytic = runs[name]["measured"].ops, runs[name]["analytic"].ops
    pd.testing.assert_frame_equal(_comparable(measured), _comparable(analytic))
    data_only = measured["op"].isin(_DATA_ONLY)
    assert measured["flops"].sum() - measured.loc[data_only, "flops"].sum() == analytic["flops"].sum()
    assert not runs[name]["measured"].unsupported  # every op has a formula


@pytest.mark.parametrize("name", TINY)
def test_layer_types_sum_to_the_total_and_the_denoiser_is_one_stage(runs, name):
    d = runs[name]["analytic"].to_dict()
    flops = d["flops"]
    assert sum(flops["by_layer_type"].values()) == flops["total"] == sum(flops["by_stage"].values())
    assert "denoiser" in flops["by_stage"] and "unet" not in flops["by_stage"]
    den = flops["by_stage_layer_type"]["denoiser"]
    assert den.get("modulation", 0) > 0 and den.get("patchify", 0) > 0  # adaLN and the patch embedding
    assert sum(flops["by_level"].values()) == flops["by_stage"]["denoiser"]
    ops = runs[name]["analytic"].ops
    assert (ops.loc[ops["stage"] == "denoiser", "level"] != "").all()  # every denoiser op has its level


def _den(runs, name, step=0):
    ops = runs[name]["measured"].ops
    return ops[(ops["stage"] == "denoiser") & (ops["step"] == step)]


def test_joint_attention_scores_cover_text_and_image_tokens(runs):
    # tiny-sd3 at 64 px: latent 8x8, patch 2 -> 16 image tokens; 77 CLIP + 16 T5 text tokens; CFG batch 2;
    # 4 heads of 8. Scores of one joint layer: B * H * N * N * (2d + 1) (the products and the 1/sqrt(d) scale),
    # with N = 16 + 93.
    den = _den(runs, "tiny-sd3")
    score = den[den["layer_type"] == "attn_score"]
    assert set(score["attn_kind"]) == {"joint"}
    n = 16 + 77 + 16
    assert score.groupby("module")["flops"].sum().tolist() == [2 * 4 * n * n * (2 * 8 + 1)] * 2
    assert set(score["tokens"]) == {16}  # the image part: text tokens are n - tokens
    # qk RMS norms (SD3.5 block types) are norms inside attention
    qk = den[den["module"].str.contains(r"attn\.norm_") & (den["layer_type"] != "view")]
    assert len(qk) and (qk["layer_type"] == "norm").all()


def test_mmdit_x_adds_image_only_self_attention_to_its_dual_blocks(runs):
    # tiny-sd35 at 64 px: 16 image tokens, 77 + 16 text tokens, CFG batch 2, 4 heads of 8. Block 0 (dual) runs the
    # joint attention and an image-only self-attention (attn2: B * H * 16 * 16 * (2d + 1) score FLOPs); block 1 the
    # joint attention alone.
    den = _den(runs, "tiny-sd35")
    score = den[den["layer_type"] == "attn_score"]
    by_module = score.groupby("module")["flops"].sum().to_dict()
    n = 16 + 77 + 16
    assert by_module == {"transformer.transformer_blocks.0.attn": 2 * 4 * n * n * 17,
                         "transformer.transformer_blocks.0.attn2": 2 * 4 * 16 * 16 * 17,
                         "transformer.transformer_blocks.1.attn": 2 * 4 * n * n * 17}
    kinds = score.drop_duplicates("module").set_index("module")["attn_kind"].to_dict()
    assert kinds["transformer.transformer_blocks.0.attn2"] == "self" and kinds[
        "transformer.transformer_blocks.0.attn"] == "joint"
    # its 9D adaLN (shift, scale, gate for the joint and the image-only attention and the FFN) is modulation
    ada = den[den["module"] == "transformer.transformer_blocks.0.norm1.linear"]
    assert set(ada["layer_type"]) == {"modulation"} and ada["flops"].sum() == 2 * 2 * 32 * 9 * 32 + 2 * 9 * 32


def test_flux_blocks_rope_and_single_stream_joint_attention(runs):
    # tiny-flux at 64 px: latent 8x8 packed 2x2 -> 16 image tokens; 16 T5 tokens; no CFG (batch 1); 4 heads of 8
    den = _den(runs, "tiny-flux")
    assert set(den["cfg"]) == {""}
    levels = set(den["level"])
    assert {"double.0", "single.0", "single.1", "in", "embed", "out"} <= levels
    score = den[den["layer_type"] == "attn_score"]
    n = 16 + 16
    assert set(score["attn_kind"]) == {"joint"}
    assert score.groupby("module")["flops"].sum().tolist() == [1 * 4 * n * n * (2 * 8 + 1)] * 3
    rope = den[den["layer_type"] == "rope"]
    # q and k of 3 attention layers rotated: x*cos + rot(x)*sin, 2 multiplies and an add per element at least
    assert rope[rope["module"].str.contains("attn")]["flops"].sum() >= 3 * 2 * 3 * (4 * n * 8)


def test_sana_linear_attention_is_split_into_kv_summary_and_query_product(runs):
    # tiny-sana at 64 px: DC-AE f32 -> 2x2 latent, patch 1 -> 4 tokens; CFG batch 2; 4 heads of 8 (v padded to 9)
    den = _den(runs, "tiny-sana")
    n, h, d, b = 4, 4, 8, 2
    kv = den[den["layer_type"] == "linattn_kv"]
    q = den[den["layer_type"] == "linattn_q"]
    assert set(kv["attn_kind"]) == set(q["attn_kind"]) == {"linear"}
    assert kv["flops"].tolist() == [2 * b * h * (d + 1) * n * d] * 2  # V' (d+1 x N) . K (N x d)
    assert q["flops"].tolist() == [2 * b * h * (d + 1) * d * n] * 2  # (d+1 x d) . Q (d x N)
    ffn_convs = den[(den["op"] == "aten.conv2d.default") & den["module"].str.contains(r"\.ff\.")]
    assert len(ffn_convs) == 2 * 3 and (ffn_convs["layer_type"] == "ffn").all()  # Mix-FFN convolutions are ffn


def test_measured_dit_run_writes_a_complete_folder(runs):
    r = runs["tiny-flux"]["measured"]
    d = json.loads((Path(r.run_dir) / "run.json").read_text())
    assert d["status"] == "ok" and d["cfg"] is False and d["steps"] == 2
    assert set(d["params"]) == {"text_encoder", "text_encoder_2", "transformer", "vae"}
    assert {"text_encoder", "text_encoder_2", "denoiser", "scheduler", "vae_decoder"} <= set(d["stages"])


@pytest.mark.slow
def test_models_lists_text_encoders_tokens_and_stand_in_tokenizers(capsys):
    assert main(["models", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    flux = rows["flux-dev"]
    assert flux["denoiser"] == "transformer" and flux["params"]["transformer"] == PUBLISHED["flux-dev"]["transformer"]
    assert [(e["class"], e["tokens"], e["tokenizer"]) for e in flux["text_encoders"]] == [
        ("CLIPTextModel", 77, "real CLIP BPE"), ("T5EncoderModel", 512, "stand-in")]
    assert rows["flux-schnell"]["steps"] == 4 and rows["flux-dev"]["cfg"] is False
    assert rows["sd3-medium"]["text_encoders"][2]["tokens"] == 256 and rows["pixart-alpha"]["text_encoders"][0][
        "tokens"] == 120


def test_stand_in_tokenizer_pads_to_the_pipeline_length():
    from diffprobe.models.tokenizer import load_tokenizer

    tok = load_tokenizer(get_spec("flux-dev").config("tokenizer_2"))
    ids = tok(["a photo of an astronaut"], padding="max_length", max_length=512, truncation=True,
              return_tensors="pt").input_ids
    assert ids.shape == (1, 512) and int(ids.max()) < 32128  # within T5's vocabulary
    assert tok.eos_token_id == 1 and tok.pad_token_id == 0 and ids[0, -1] == 0


def _one_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and needle in err, err


@pytest.mark.slow
def test_bad_dit_inputs_are_one_line(capsys, monkeypatch):
    _one_line(capsys, ["profile", "--model", "flux-dvv", "--mode", "analytic"], "known models")
    _one_line(capsys, ["profile", "--model", "tiny-sd3", "--height", "72", "--mode", "analytic"],
              "multiple of 16")
    from diffprobe.hardware import environment

    monkeypatch.setattr(environment, "available_memory", lambda device: 2**30)
    _one_line(capsys, ["profile", "--model", "sd3-medium", "--steps", "1"], "--mode analytic")
    _one_line(capsys, ["profile", "--model", "sd3-medium", "--steps", "1"], "GiB (7.69 G parameters in float32")
    _one_line(capsys, ["profile", "--model", "sd3-medium", "--steps", "1"], "--model tiny-sd3")


@pytest.mark.fullsize
@pytest.mark.slow
def test_analytic_full_size_flux_at_native_resolution(tmp_path):
    d = diffprobe.profile(model="flux-dev", mode="analytic", steps=1, out=str(tmp_path)).to_dict()
    den = d["flops"]["by_stage_layer_type"]["denoiser"]
    # 1024 px: 64x64 packed latent tokens = 4096 image + 512 text; 19 double + 38 single joint layers, 24 heads of
    # 128, batch 1: scores 24 * N^2 * (2 * 128 + 1) per layer
    n = 4096 + 512
    assert den["attn_score"] == 57 * 24 * n * n * (2 * 128 + 1)
