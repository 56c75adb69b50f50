"""Wan 2.1 (text-to-video DiT, UMT5-XXL encoder, 3D causal VAE; CFG as two transformer calls per step): parameter
counts, the tiny variant's records measured == analytic, one block hand-counted, the frame axis in token counts,
and bad --frames. Expected values come from tests/reference/params.py (layer shapes) and hand formulas."""

import pytest

from diffprobe.cli import main
from diffprobe.models.registry import build_components, count_params, get_spec
from diffprobe.run.profile import ProfileConfig, run_profile
from tests.models.test_dit import assert_records_agree, measured_and_analytic
from tests.reference import params as ref


def _params(name):
    return {k: count_params(v) for k, v in build_components(get_spec(name), "meta").items() if hasattr(v, "parameters")}


def test_parameter_counts_equal_the_layer_shape_derivation_and_the_published_sizes():
    small, large = _params("wan21-t2v-1.3b"), _params("wan21-t2v-14b")
    assert small["transformer"] == ref.wan(12, 128, 30, 8960)
    assert large["transformer"] == ref.wan(40, 128, 40, 13824)
    # the model cards' sizes: "1.3B" (the checkpoint's 1.42 B) and "14B" (14.29 B); UMT5-XXL's encoder 5.68 B
    assert round(small["transformer"] / 1e7) == 142 and round(large["transformer"] / 1e7) == 1429
    assert small["text_encoder"] == large["text_encoder"] == ref.umt5_encoder(4096, 10240, 64, 64, 24)
    assert round(small["text_encoder"] / 1e7) == 568
    tiny = _params("tiny-wan")
    assert tiny["transformer"] == ref.wan(2, 8, 2, 32, text=32, freq=16)
    assert tiny["text_encoder"] == ref.umt5_encoder(32, 64, 4, 8, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return measured_and_analytic(tmp_path_factory, "tiny-wan")


def test_measured_and_analytic_records_agree_over_both_cfg_calls_and_the_3d_vae(runs):
    assert_records_agree(runs["measured"], runs["analytic"])
    vae = runs["measured"].ops
    vae = vae[vae["stage"] == "vae_decoder"]
    # the causal VAE decodes one latent frame at a time: 9 frames are 3 latent frames, so its output conv runs 3 times
    out = vae[(vae["module"] == "vae.decoder.conv_out") & (vae["layer_type"] == "conv")]
    assert len(out) == 3 and set(vae["level"]) >= {"dec", "dec.mid", "dec.up.0"}


def test_tokens_count_latent_frames_times_the_patch_grid(runs):
    d = runs["analytic"].to_dict()
    # 64 px, 9 frames: latent 3 frames x 8 x 8, patches 1x2x2 -> 3 x 4 x 4 = 48 tokens
    assert (d["frames"], d["latent_frames"], d["tokens"]) == (9, 3, 48)
    ops = runs["analytic"].ops
    score = ops[(ops["layer_type"] == "attn_score") & (ops["stage"] == "denoiser")]
    self_attn = score[score["attn_kind"] == "self"]
    assert set(self_attn["tokens"]) == {48}
    # self-attention scores per call: 2 blocks x 2 heads x N x N x (2 x head_dim + 1) (Q K^T: a multiply and an add
    # per term, then the scale)
    per_call = self_attn[(self_attn["step"] == 0) & (self_attn["cfg"] == "cond")]["flops"].sum()
    assert per_call == 2 * 2 * 48 * 48 * (2 * 8 + 1)


def test_one_block_hand_counted(runs):
    # 64 px x 9 frames: 48 tokens, D = 16 (2 heads of 8), the caption padded to 16 tokens, every linear with a bias
    ops = runs["measured"].ops
    block = ops[(ops["step"] == 0) & (ops["cfg"] == "cond") & ops["module"].str.startswith("transformer.blocks.0.")]
    by = block.groupby("module")["flops"].sum()
    n, t, d, ffn = 48, 16, 16, 32

    def lin(tokens, i, o):
        return 2 * tokens * i * o + tokens * o

    p = "transformer.blocks.0."
    for s in ("q", "k", "v"):
        assert by[p + f"attn1.to_{s}"] == lin(n, d, d)
    assert by[p + "attn1.to_out.0"] == lin(n, d, d) and by[p + "attn2.to_q"] == lin(n, d, d)
    assert by[p + "attn2.to_k"] == lin(t, d, d) and by[p + "attn2.to_v"] == lin(t, d, d)
    assert by[p + "ffn.net.0.proj"] == lin(n, d, ffn) and by[p + "ffn.net.2"] == lin(n, ffn, d)
    kinds = block[block["layer_type"] == "attn_score"].groupby("module")["attn_kind"].agg(set)
    assert kinds[p + "attn1"] == {"self"} and kinds[p + "attn2"] == {"cross"}
    # the 3D RoPE applied to q and k inside the processor: 4 elementwise ops each over N x D
    rope = block[(block["module"] == p + "attn1") & (block["layer_type"] == "rope")]
    assert rope["flops"].sum() == 2 * 6 * n * d / 2
    # the cross-attention scores: every image token against the caption's 16
    cross = block[(block["module"] == p + "attn2") & (block["layer_type"] == "attn_score")]
    assert cross["flops"].sum() == 2 * n * t * (2 * 8 + 1)
    assert set(ops.loc[ops["module"] == "transformer.patch_embedding", "level"]) == {"in"}


def test_frames_change_the_token_count_and_bad_frames_are_refused(tmp_path, capsys):
    run = run_profile(ProfileConfig(model="tiny-wan", steps=1, frames=17, mode="analytic", out=str(tmp_path / "f")))
    assert run.to_dict()["tokens"] == 5 * 4 * 4
    assert main(["profile", "--model", "tiny-wan", "--mode", "analytic", "--frames", "8",
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "4k+1 (e.g. 5 or 9)" in err and "Traceback" not in err
    assert main(["profile", "--model", "tiny", "--mode", "analytic", "--frames", "9",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--frames applies to video models; tiny makes images" in err and err.count("\n") == 1
    assert main(["profile", "--model", "tiny-wan", "--mode", "analytic", "--frames", "0",
                 "--out", str(tmp_path / "c")]) == 2
    assert "--frames 0" in capsys.readouterr().err


def test_a_frame_sweep_fits_attention_as_latent_frames_squared(tmp_path):
    """Along frames at one size the tokens are latent frames x 16, so self-attention's scores, softmax and P·V grow
    exactly as latent frames^2 (the hand formula: heads x N^2 per block and call); the per-token layers less than
    linearly (the caption's keys and values, the timestep MLP, do not grow)."""
    import json

    import pandas as pd

    from diffprobe.run.sweep import SweepConfig, run_sweep

    base = ProfileConfig(model="tiny-wan", steps=1, mode="analytic")
    state = run_sweep(SweepConfig(base=base, resolutions=[(64, 64)], frames=[5, 9, 17], out=str(tmp_path)))
    f = state["findings"]
    assert sorted(state["points"]) == ["64x64-f17-b1", "64x64-f5-b1", "64x64-f9-b1"]
    fits = f["exponents_latent_frames"]["flops"]
    assert fits["attention_core"]["k"] == pytest.approx(2.0, abs=1e-9)
    assert 0.8 < fits["linear_layers"]["k"] < 1.0
    for frames, latent in ((5, 2), (9, 3), (17, 5)):
        point = tmp_path / "points" / f"64x64-f{frames}-b1"
        assert json.loads((point / "run.json").read_text())["latent_frames"] == latent
        ops = pd.read_parquet(point / "ops.parquet")
        scores = ops[(ops["stage"] == "denoiser") & (ops["layer_type"] == "attn_score") & (ops["attn_kind"] == "self")]
        n = latent * 16
        assert scores["flops"].sum() == 2 * 2 * 2 * n * n * (2 * 8 + 1)  # 2 calls (CFG) x 2 blocks x 2 heads
    assert any("latent frames^2.00" in line for line in f["sentences"])


def test_wan22_switches_experts_at_the_boundary_timestep(tmp_path, capsys):
    """Wan 2.2 A14B: two 14B experts (the published "A14B": 14 B active per step), the high-noise one for the steps
    whose timestep is at least boundary_ratio x 1000 (0.875: 875), the low-noise one after; both are the denoiser
    stage, measured == analytic on the tiny variant, and the methods installed on one denoiser are refused."""
    from diffprobe.models.registry import build_scheduler

    full = _params("wan22-t2v-a14b")
    assert full["transformer"] == full["transformer_2"] == ref.wan(40, 128, 40, 13824)
    sched = build_scheduler(get_spec("tiny-wan22"))
    sched.set_timesteps(4, device="cpu")
    high = [i for i, t in enumerate(sched.timesteps) if float(t) >= 875]
    assert 0 < len(high) < 4  # both experts run in 4 steps (flow shift 12 keeps most steps high)
    runs = {mode: run_profile(ProfileConfig(model="tiny-wan22", steps=4, sample_steps=0, mode=mode,
                                            out=str(tmp_path / mode))) for mode in ("measured", "analytic")}
    assert_records_agree(runs["measured"], runs["analytic"])
    den = runs["analytic"].ops
    den = den[den["stage"] == "denoiser"]
    experts = den.groupby("step")["module"].agg(lambda m: {x.split(".")[0] for x in m}).to_dict()
    assert experts == {i: {"transformer" if i in high else "transformer_2"} for i in range(4)}
    assert set(den.loc[den["module"].str.startswith("transformer_2.blocks.0."), "level"]) == {"block.0"}
    d = runs["measured"].to_dict()
    assert len(d["step_times"]) == 4 and all(s["denoiser_s"] > 0 for s in d["step_times"])
    for argv, needle in ((["profile", "--approx", "pab=2"], "--approx: tiny-wan22 switches between 2 denoiser"),
                         (["sparsity", "--resolutions", "64"], "sparsity: tiny-wan22 switches")):
        assert main([*argv, "--model", "tiny-wan22", "--steps", "2", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err


def test_a_measured_clip_whose_activations_do_not_fit_is_refused(tmp_path, capsys, monkeypatch):
    """Weights and the largest activation against the memory available, before any folder or build: at 128 px tiny
    Wan's largest tensor is its VAE decoder's last upsampling of a latent frame (4 frames x 16 channels x 128 x 128
    fp32 = 4.0 MiB, by hand from the VAE config: base 8 x the last multiplier 2), twice that beyond the weights
    (8.47 M parameters) and the 15% slack the weights check allows."""
    from diffprobe.hardware import environment

    weights = sum(_params("tiny-wan").values()) * 4
    monkeypatch.setattr(environment, "available_memory", lambda device: int(weights * 1.15) + 2**20)
    out, size = tmp_path / "m", ["--height", "128", "--width", "128", "--steps", "1"]
    assert main(["profile", "--model", "tiny-wan", *size, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "twice its largest activation, 4.0 MiB" in err and err.count("\n") == 1 and not out.exists()
    from diffprobe.run.profile import check_activations

    monkeypatch.setattr(environment, "available_memory", lambda device: weights + 9 * 2**20)
    check_activations(ProfileConfig(model="tiny-wan", height=128, width=128, steps=1).resolved())  # fits: no error
