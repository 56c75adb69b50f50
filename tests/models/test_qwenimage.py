"""Qwen-Image (double-stream MMDiT, Qwen2.5-VL encoder, true CFG as two transformer calls per step): parameter
counts, the tiny variant's records measured == analytic with both CFG calls, one block hand-counted, the calls'
attribution to steps and branches, and bad inputs. Expected values come from tests/reference/params.py (layer
shapes) and hand formulas."""

import pytest

from diffprobe.cli import main
from diffprobe.models.registry import build_components, count_params, get_spec
from diffprobe.models.tokenizer import load_tokenizer
from diffprobe.run.profile import ProfileConfig, run_profile
from tests.models.test_dit import assert_records_agree, measured_and_analytic
from tests.reference import params as ref

TEMPLATE_DROP = 34  # the pipeline drops its template's first 34 tokens (system turn and the user turn's opening)


def _params(name):
    return {k: count_params(v) for k, v in build_components(get_spec(name), "meta").items() if hasattr(v, "parameters")}


def test_parameter_counts_equal_the_layer_shape_derivation_and_the_model_cards():
    full = _params("qwen-image")
    assert full["transformer"] == ref.qwen_image(24, 128, 60, 3584)
    assert full["text_encoder"] == ref.qwen25_vl(3584, 18944, 28, 4, 128, 28, 1280, 3420, 32, 3584)
    # the model cards: Qwen-Image "20B MMDiT"; Qwen2.5-VL-7B-Instruct 8.29 B parameters (its hub page)
    assert round(full["transformer"] / 1e9) == 20 and round(full["text_encoder"] / 1e7) == 829
    tiny = _params("tiny-qwen-image")
    assert tiny["transformer"] == ref.qwen_image(4, 8, 2, 32)
    assert tiny["text_encoder"] == ref.qwen25_vl(32, 64, 4, 2, 8, 2, 16, 32, 2, 32)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return measured_and_analytic(tmp_path_factory, "tiny-qwen-image")


def test_measured_and_analytic_records_agree_over_both_cfg_calls(runs):
    # two encoder calls (prompt, negative prompt), each with an all-ones mask: its test (a sum, a compare) and, in
    # the measured run, its conversion to bool
    assert_records_agree(runs["measured"], runs["analytic"], mask_tests=4, mask_conversions=2)


def _caption_tokens(prompt: str) -> int:
    """The caption the pipeline keeps: its template rendered, the first 34 tokens dropped, unpadded."""
    pipe_template = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                     "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
                     "<|im_end|>\n<|im_start|>assistant\n")
    tok = load_tokenizer(get_spec("tiny-qwen-image").config("tokenizer"))
    return len(tok(pipe_template.format(prompt)).input_ids) - TEMPLATE_DROP


def test_each_step_runs_the_transformer_on_each_branch_as_its_own_call(runs):
    d = runs["measured"].to_dict()
    assert d["cfg"] is True and d["denoiser_calls_per_step"] == 2 and d["denoiser_evals"] == 2
    assert [s["step"] for s in d["step_times"]] == [0, 1]  # one entry per step, both calls' seconds in it
    # one timed run: each step's seconds are its two calls', so the steps add up to the stage's time
    assert sum(s["denoiser_s"] for s in d["step_times"]) == pytest.approx(d["stages"]["denoiser"], rel=1e-9)
    ops = runs["measured"].ops
    den = ops[ops["stage"] == "denoiser"]
    assert set(den["cfg"]) == {"cond", "uncond"} and set(den["step"]) == {0, 1}
    # each call on batch 1: the image tokens and its own caption (the negative prompt " " keeps 5 tokens: the
    # template's closing <|im_end|> \n <|im_start|> assistant \n)
    image, cond, uncond = 16, _caption_tokens(runs["measured"].config.prompt), _caption_tokens(" ")
    assert uncond == 5
    score = den[(den["layer_type"] == "attn_score") & (den["module"] == "transformer.transformer_blocks.0.attn")]
    assert score.groupby(["step", "cfg"])["flops"].sum().to_dict() == {
        (s, b): 4 * (image + n) ** 2 * (2 * 8 + 1) for s in (0, 1) for b, n in (("cond", cond), ("uncond", uncond))}
    per_call = d["denoiser_per_call_and_sample"]
    assert per_call["calls"] == 4 and per_call["samples_per_call"] == 1


def test_one_block_hand_counted(runs):
    # 64 px: latent 8x8 in 2x2 packed tokens -> 16 image tokens, D = 32 (4 heads of 8), every linear with a bias
    ops = runs["measured"].ops
    block = ops[(ops["step"] == 0) & (ops["cfg"] == "cond")
                & ops["module"].str.startswith("transformer.transformer_blocks.0.")]
    by = block.groupby("module")["flops"].sum()
    n, t, d = 16, _caption_tokens(runs["measured"].config.prompt), 32

    def lin(tokens, i, o):
        return 2 * tokens * i * o + tokens * o

    p = "transformer.transformer_blocks.0."
    for s in ("q", "k", "v"):
        assert by[p + f"attn.to_{s}"] == lin(n, d, d) and by[p + f"attn.add_{s}_proj"] == lin(t, d, d)
    assert by[p + "attn.to_out.0"] == lin(n, d, d) and by[p + "attn.to_add_out"] == lin(t, d, d)
    assert by[p + "img_mlp.net.0.proj"] == lin(n, d, 4 * d) and by[p + "img_mlp.net.2"] == lin(n, 4 * d, d)
    assert by[p + "txt_mlp.net.0.proj"] == lin(t, d, 4 * d) and by[p + "txt_mlp.net.2"] == lin(t, 4 * d, d)
    assert by[p + "img_mod.1"] == lin(1, d, 6 * d) and by[p + "txt_mod.1"] == lin(1, d, 6 * d)
    types = block.groupby("module")["layer_type"].agg(set)
    assert types[p + "img_mod.1"] == {"modulation"} and types[p + "attn.to_q"] == {"attn_qkv"}
    assert set(ops.loc[ops["module"] == "transformer.img_in", "level"]) == {"in"}


def test_guidance_one_runs_one_call_per_step(tmp_path):
    run = run_profile(ProfileConfig(model="tiny-qwen-image", steps=2, mode="analytic", guidance=1.0,
                                    out=str(tmp_path / "off")))
    d = run.to_dict()
    assert d["cfg"] is False and d["denoiser_calls_per_step"] == 1
    den = run.ops[run.ops["stage"] == "denoiser"]
    assert set(den["cfg"]) == {""} and den.groupby("step")["module"].apply(
        lambda m: (m == "transformer.img_in").sum()).tolist() == [1, 1]


def test_bad_sizes_and_unfit_caches_refused(tmp_path, capsys):
    assert main(["profile", "--model", "tiny-qwen-image", "--mode", "analytic", "--height", "40",
                 "--out", str(tmp_path / "a")]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main(["profile", "--model", "tiny-qwen-image", "--approx", "pab=2", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "pab applies to Flux models" in err and "Traceback" not in err


def test_the_attention_seam_tells_each_call_its_step_and_branch(tmp_path):
    """True CFG's two calls per step: an attention method sees both, each told the step (the scheduler's) and which
    call of it (0: the prompt's, 1: the negative prompt's, whose caption is shorter); its account re-weights each
    call's records by that call's own kept fraction."""
    import torch.nn.functional as F

    from diffprobe.attention.core import installed_in
    from diffprobe.run.pipeline import PipelineCall, build_pipeline

    cfg = ProfileConfig(model="tiny-qwen-image", steps=2).resolved()
    pipe = build_pipeline(cfg, get_spec(cfg.model))
    seen = []

    def core(q, k, v, mask, call):
        seen.append((call.name, call.step, call.call, k.shape[2]))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    import torch

    with torch.inference_mode(), installed_in(pipe, core):
        PipelineCall(cfg)(pipe)
    image, cond, uncond = 16, _caption_tokens(cfg.prompt), _caption_tokens(" ")
    assert sorted(seen) == sorted((f"transformer_blocks.{b}.attn", s, c, image + (cond, uncond)[c])
                                  for b in (0, 1) for s in (0, 1) for c in (0, 1))
    r = run_profile(ProfileConfig(model="tiny-qwen-image", steps=2, sample_steps=0, approx="threshold=0.05",
                                  out=str(tmp_path)))
    ap = r.to_dict()["approx"]
    assert 0 < ap["attention_share_saved"] < 1
