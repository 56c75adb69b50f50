"""diffprobe approx end to end on tiny: dense first, no-op rows identical to dense, accounts consistent."""

import json

import pytest

from diffprobe.cli import main


@pytest.mark.slow
def test_approx_json_on_tiny(tmp_path, capsys):
    assert main(["approx", "--model", "tiny", "--method", "threshold,topk", "--eps", "0,1e-2", "--k", "4",
                 "--steps", "2", "--out", str(tmp_path / "a"), "--format", "json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = d["results"]
    assert [(r["method"], r["value"]) for r in rows] == [("dense", None), ("threshold", 0.0), ("threshold", 0.01),
                                                        ("topk", 4.0)]
    noop = rows[1]
    assert noop["psnr"] is None and noop["identical"] and noop["ssim"] == 1.0 and set(noop["latent_rel_error"]) == {0.0}
    assert noop["attention_share_saved"] == 0.0 and noop["kept_fraction"] == 1.0
    dense_attn = rows[0]["attention_flops"]
    for r in rows[2:]:
        saved = dense_attn - r["attention_flops"]
        assert r["attention_share_saved"] == pytest.approx(saved / dense_attn)
        assert r["end_to_end_share_saved"] == pytest.approx(saved / d["total_flops"])
        assert len(r["latent_rel_error"]) == 2 and r["latent_rel_error"][-1] > 0
    assert rows[3]["kept_fraction"] < 1 and d["random_weights"]
    assert (tmp_path / "a" / "images" / "topk_k_4.png").exists() and (tmp_path / "a" / "report.html").exists()


@pytest.mark.parametrize("argv, message", [
    (["--method", "bogus"], "unknown method 'bogus'"), (["--eps", "1"], "outside [0, 1)"),
    (["--method", "topk", "--k", "0"], "--k values must be at least 1"),
    (["--method", "block", "--tau", "1.5"], "outside (0, 1]"), (["--per-digit", "0"], "--per-digit"),
    (["--method", "block", "--block", "0"], "--block 0"),
])
def test_approx_bad_input(argv, message, tmp_path, capsys):
    assert main(["approx", "--model", "tiny", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_profile_approx_column_matches_a_hand_count(tmp_path, capsys):
    import diffprobe

    r = diffprobe.profile(model="tiny", steps=2, sample_steps=0, approx="topk=4", out=str(tmp_path / "p"))
    d = r.to_dict()
    a = d["approx"]
    ops = r.ops
    core = ops[(ops["stage"] == "denoiser") & ops["layer_type"].isin(["attn_score", "attn_softmax", "attn_pv"])]
    # top-4 keeps min(4, keys) of every row: each call's three parts scale by min(4, keys) / keys, where keys is
    # the second dimension from the end of the call's K input (the score row's second input)
    keys = {(m, s): shapes[1][-2] for m, s, shapes, lt in
            zip(core["module"], core["step"], core["input_shapes"], core["layer_type"], strict=True)
            if lt == "attn_score"}
    expected = sum(f * min(4, keys[(m, s)]) / keys[(m, s)]
                   for f, m, s in zip(core["flops"], core["module"], core["step"], strict=True))
    assert a["attention_flops"] == pytest.approx(expected) and a["attention_flops_dense"] == core["flops"].sum()
    for lt in ("conv", "ffn", "attn_qkv", "norm"):  # everything outside the attention core is unchanged
        assert a["flops_by_layer_type"][lt] == d["flops"]["by_layer_type"][lt]
    assert a["end_to_end_share_saved"] == pytest.approx((core["flops"].sum() - expected) / d["flops"]["total"])
    assert (tmp_path / "p" / "image_approx.png").exists()
    noop = diffprobe.profile(model="tiny", steps=2, sample_steps=0, approx="threshold=0", out=str(tmp_path / "q"))
    assert noop.to_dict()["approx"]["flops_total"] == noop.to_dict()["flops"]["total"]
    assert main(["profile", "--model", "tiny", "--mode", "analytic", "--approx", "topk=4"]) == 2
    assert "--approx needs a measured run" in capsys.readouterr().err
    assert main(["profile", "--model", "tiny", "--approx", "topk"]) == 2
    assert "METHOD=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_clip_score_with_local_weights(tmp_path, capsys):
    from transformers import CLIPConfig, CLIPModel

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      max_position_embeddings=77, vocab_size=49408),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")  # a user's local CLIP folder (random, tiny)
    assert main(["approx", "--model", "tiny", "--method", "threshold", "--eps", "0", "--steps", "2",
                 "--clip-weights", str(tmp_path / "clip"), "--out", str(tmp_path / "a"), "--format", "json",
                 "-q"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert all(0 <= r["clip_score"] <= 100 for r in rows)
    assert rows[0]["clip_score"] == rows[1]["clip_score"]  # the no-op setting draws the same image
    assert main(["approx", "--model", "tiny", "--clip-weights", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "not a CLIP model folder" in capsys.readouterr().err
