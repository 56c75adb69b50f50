"""The video families beside Wan (tests/models/test_wan.py): CogVideoX, LTX-Video, Mochi 1 and HunyuanVideo.
Per model: parameter counts (the model cards' sizes and an independent layer-shape derivation), the tiny variant's
records measured == analytic, its token count (latent frames x the patch grid), one transformer block's linear
layers hand-counted, and --frames refused off the VAE's temporal grid. Expected values come from
tests/reference/params.py and hand formulas."""

import pytest

from diffprobe.cli import main
from diffprobe.models.registry import build_components, count_params, get_spec
from tests.models.test_dit import assert_records_agree, measured_and_analytic
from tests.reference import params as ref


def _params(name):
    return {k: count_params(v) for k, v in build_components(get_spec(name), "meta").items() if hasattr(v, "parameters")}


def test_parameter_counts_equal_the_layer_shape_derivation_and_the_model_cards():
    cog, ltx, mochi, hy = (_params(n) for n in ("cogvideox-5b", "ltx-video", "mochi-1", "hunyuan-video"))
    assert cog["transformer"] == ref.cogvideox(48, 64, 42)
    assert ltx["transformer"] == ref.ltx_video(32, 64, 28, 2048)
    assert mochi["transformer"] == ref.mochi(24, 128, 48)
    assert hy["transformer"] == ref.hunyuan_video(24, 128, 20, 40, 2)
    # the model cards: CogVideoX "5B", LTX-Video "1.9B" (its paper), Mochi "10 billion", HunyuanVideo "13 billion"
    assert int(cog["transformer"] / 1e9) == 5 and round(ltx["transformer"] / 1e8) == 19
    assert round(mochi["transformer"] / 1e9) == 10 and round(hy["transformer"] / 1e9) == 13
    t5 = ref.t5_encoder(4096, 10240, 64, 64, 24)
    assert cog["text_encoder"] == ltx["text_encoder"] == mochi["text_encoder"] == t5
    # HunyuanVideo's LLaVA-Llama-3 text model: Llama 3 8B's layers over a 128,320-token vocabulary, no LM head
    assert hy["text_encoder"] == ref.llama(4096, 14336, 32, 8, 128, 32, vocab=128320) - 128320 * 4096
    tiny = {n: _params(n)["transformer"] for n in ("tiny-cogvideox", "tiny-ltx", "tiny-mochi", "tiny-hunyuan-video")}
    assert tiny == {"tiny-cogvideox": ref.cogvideox(2, 16, 2, time=16, text=32),
                    "tiny-ltx": ref.ltx_video(2, 8, 2, 16, caption=32, channels=8),
                    "tiny-mochi": ref.mochi(2, 8, 2, context=8, text=32, freq=16),
                    "tiny-hunyuan-video": ref.hunyuan_video(2, 8, 1, 1, 1, text=32, pooled=32)}


def lin(tokens, i, o, bias=True):
    return 2 * tokens * i * o + (tokens * o if bias else 0)


# tiny variant -> (frames, latent frames, tokens), the measured run's allowances (analytic.md: data-only ops), and
# block 0's linears: module -> FLOPs at step 0, by hand from the layer shapes (CFG batched: 2 samples)
CASES = {
    # 64 px, 9 frames: 3 latent frames x 4 x 4 patches = 48 video tokens, 16 caption tokens in one joint sequence
    "tiny-cogvideox": ((9, 3, 48), {}, "transformer.transformer_blocks.0.", {
        "norm1.linear": lin(2, 16, 6 * 32), "attn1.to_q": lin(2 * 64, 32, 32), "attn1.to_out.0": lin(2 * 64, 32, 32),
        "ff.net.0.proj": lin(2 * 64, 32, 128), "ff.net.2": lin(2 * 64, 128, 32)}),
    # the VAE compresses 32 x 32 x 8: 9 frames are 2 latent frames of 2 x 2 tokens; cross-attention to 16
    "tiny-ltx": ((9, 2, 8), {}, "transformer.transformer_blocks.0.", {
        "attn1.to_q": lin(2 * 8, 16, 16), "attn2.to_q": lin(2 * 8, 16, 16), "attn2.to_k": lin(2 * 16, 16, 16),
        "ff.net.0.proj": lin(2 * 8, 16, 64), "ff.net.2": lin(2 * 8, 64, 16)}),
    # 6x in time: 7 frames are 2 latent frames x 4 x 4 = 32 tokens; the caption at width 8, bias-free projections
    "tiny-mochi": ((7, 2, 32), {}, "transformer.transformer_blocks.0.", {
        "attn1.to_q": lin(2 * 32, 16, 16, False), "attn1.add_k_proj": lin(2 * 16, 8, 16, False),
        "attn1.to_add_out": lin(2 * 16, 16, 8), "ff.net.0.proj": lin(2 * 32, 16, 2 * 42, False),
        "ff.net.2": lin(2 * 32, 42, 16, False), "ff_context.net.2": lin(2 * 16, 21, 8, False)}),
    # guidance-distilled (one sample); 48 video tokens, 64 caption tokens; the single block runs on all 112
    "tiny-hunyuan-video": ((9, 3, 48), {"mask_tests": 4, "scalar_fills": 2}, "transformer.", {
        "transformer_blocks.0.attn.to_q": lin(48, 16, 16), "transformer_blocks.0.attn.add_q_proj": lin(64, 16, 16),
        "transformer_blocks.0.ff.net.2": lin(48, 64, 16), "single_transformer_blocks.0.proj_mlp": lin(112, 16, 64),
        "single_transformer_blocks.0.proj_out": lin(112, 80, 16)}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def runs(request, tmp_path_factory):
    return request.param, measured_and_analytic(tmp_path_factory, request.param)


def test_measured_equals_analytic_tokens_and_one_block_by_hand(runs):
    name, r = runs
    (frames, latent, tokens), allowances, prefix, block = CASES[name]
    assert_records_agree(r["measured"], r["analytic"], **allowances)
    d = r["analytic"].to_dict()
    assert (d["frames"], d["latent_frames"], d["tokens"]) == (frames, latent, tokens)
    ops = r["measured"].ops
    step0 = ops[(ops["step"] == 0) & (ops["stage"] == "denoiser")]
    by = step0.groupby("module")["flops"].sum()
    assert {k: int(by[prefix + k]) for k in block} == block
    kinds = set(step0.loc[step0["layer_type"] == "attn_score", "attn_kind"])
    assert kinds & {"joint", "cross"}  # the caption reaches the video tokens through attention


@pytest.mark.parametrize("name, bad, grid", [("tiny-cogvideox", 8, "4k+1"), ("tiny-ltx", 10, "8k+1"),
                                             ("tiny-mochi", 8, "6k+1"), ("tiny-hunyuan-video", 6, "4k+1")])
def test_frames_off_the_vae_grid_are_refused(name, bad, grid, tmp_path, capsys):
    assert main(["profile", "--model", name, "--mode", "analytic", "--frames", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert grid in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("name, why", [("tiny-ltx", "terminal value"), ("tiny-mochi", "linear-quadratic")])
def test_one_step_is_refused_where_the_schedule_needs_two(name, why, tmp_path, capsys):
    # LTX-Video's stretched flow schedule gives a NaN timestep for one step; Mochi's divides by half the steps
    assert main(["profile", "--model", name, "--mode", "analytic", "--steps", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert why in err and "--steps 2 or more" in err and err.count("\n") == 1
