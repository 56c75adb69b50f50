"""Every function of ``diffprobe.analyses`` on one small synthetic op table, expected values derived by hand.

The table (``OPS``) is twelve records of a made-up run with two denoising steps. Row by row (FLOPs, bytes read /
written, seconds):

    0 text_encoder  linear                      100 FLOPs  10 /  5 B  0.010 s   (macs 50)
    1 denoiser  s0  conv      in     64 tokens 1000       40 / 20     0.100     (macs 500)
    2 denoiser  s0  attn_score   self down.0 64  400      16 /  0     0.020     sdpa score (unfused 16 / 64)
    3 denoiser  s0  attn_softmax self down.0 64   50       0 /  0     0.010     sdpa softmax (unfused 64 / 64)
    4 denoiser  s0  attn_pv      self down.0 64  400      16 / 16     0.020     sdpa pv (unfused 80 / 16)
    5 denoiser  s0  attn_score  cross down.0 64  200       8 /  8     0.010
    6 scheduler s0  elementwise                   10       4 /  4     0.001
    7 denoiser  s1  conv      in     64 tokens 1000       40 / 20     0.100     (macs 500)
    8 denoiser  s1  attn_score   self down.0 64  400      16 /  0     0.020
    9 denoiser  s1  attn_softmax self down.0 64   50       0 /  0     0.010
   10 denoiser  s1  attn_pv      self down.0 64  400      16 / 16     0.020
   11 vae_decoder   conv      dec.out          300      30 / 30     0.050     (macs 150)

Totals by hand: FLOPs 4310 (text 100, denoiser 3900, scheduler 10, VAE 300); step 0: 2060, step 1: 1850.
"""

import math

import pandas as pd
import pytest

from diffprobe.analyses import breakdown, roofline, savings, scaling, sparsity
from diffprobe.analyses import sweep as sweep_analysis
from diffprobe.analyses.findings import approx_findings, eps_tau, share_classes, sparsity_headline, sweep_findings
from diffprobe.hardware.preset import HardwarePreset
from diffprobe.records.schema import COLUMNS, OpRecord

A1 = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1"
A2 = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2"
Q, K = [2, 8, 64, 40], [2, 8, 64, 40]  # an SDPA call: batch 2 (CFG), 8 heads, 64 tokens, head dim 40


def _row(i, stage, step, module, level, tokens, lt, kind, flops, br, bw, t, macs=0, op="aten.x", part="",
         unfused=None, shapes=None):
    bru, bwu = unfused or (br, bw)
    ins, outs = shapes or ([[1]], [[1]])
    return OpRecord(i, op, part, stage, step, module, level, tokens, lt, kind, "", ins, outs, "float32", flops,
                    macs, br, bw, bru, bwu, t, 0.0, False, False)


def _ops() -> pd.DataFrame:
    rows = [
        _row(0, "text_encoder", -1, "text_encoder.fc", "", 0, "linear", "", 100, 10, 5, 0.010, macs=50),
        _row(1, "denoiser", 0, "unet.conv_in", "in", 64, "conv", "", 1000, 40, 20, 0.100, macs=500),
        _row(2, "denoiser", 0, A1, "down.0", 64, "attn_score", "self", 400, 16, 0, 0.020, op="sdpa", part="score",
             unfused=(16, 64), shapes=([Q, K], [])),
        _row(3, "denoiser", 0, A1, "down.0", 64, "attn_softmax", "self", 50, 0, 0, 0.010, op="sdpa", part="softmax",
             unfused=(64, 64)),
        _row(4, "denoiser", 0, A1, "down.0", 64, "attn_pv", "self", 400, 16, 16, 0.020, op="sdpa", part="pv",
             unfused=(80, 16)),
        _row(5, "denoiser", 0, A2, "down.0", 64, "attn_score", "cross", 200, 8, 8, 0.010),
        _row(6, "scheduler", 0, "scheduler", "", 0, "elementwise", "", 10, 4, 4, 0.001),
        _row(7, "denoiser", 1, "unet.conv_in", "in", 64, "conv", "", 1000, 40, 20, 0.100, macs=500),
        _row(8, "denoiser", 1, A1, "down.0", 64, "attn_score", "self", 400, 16, 0, 0.020, op="sdpa", part="score",
             shapes=([Q, K], [])),
        _row(9, "denoiser", 1, A1, "down.0", 64, "attn_softmax", "self", 50, 0, 0, 0.010),
        _row(10, "denoiser", 1, A1, "down.0", 64, "attn_pv", "self", 400, 16, 16, 0.020),
        _row(11, "vae_decoder", -1, "vae.decoder.conv_out", "dec.out", 0, "conv", "", 300, 30, 30, 0.050, macs=150),
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


OPS = _ops()


# -- breakdown ---------------------------------------------------------------------------------------------------
def test_account_by_stage_type_level_and_step():
    a = breakdown.account(OPS, "flops")
    assert a["total"] == 4310
    assert a["by_stage"] == {"text_encoder": 100, "denoiser": 3900, "scheduler": 10, "vae_decoder": 300}
    assert a["by_layer_type"] == {"linear": 100, "conv": 2300, "attn_score": 1000, "attn_softmax": 100,
                                  "attn_pv": 800, "elementwise": 10}
    assert a["by_stage_layer_type"]["denoiser"] == {"conv": 2000, "attn_score": 1000, "attn_softmax": 100,
                                                    "attn_pv": 800}
    assert a["by_level"] == {"in": 2000, "down.0": 1900}  # denoiser rows with a level only
    assert a["by_step"] == {"0": 2060, "1": 1850}  # every stage's rows inside the loop (the scheduler's too)
    assert breakdown.account(OPS.iloc[:0], "flops")["total"] == 0


def test_bytes_macs_levels_and_layers():
    b = breakdown.with_bytes(OPS)
    assert list(b["bytes"]) == [15, 60, 16, 0, 32, 16, 8, 60, 16, 0, 32, 60]
    assert b.loc[2, "bytes_unfused"] == 80 and b.loc[3, "bytes_unfused"] == 128 and "bytes" not in OPS
    assert breakdown.totals(OPS, ["stage"], "flops")["denoiser"] == 3900
    assert breakdown.macs_conv_linear(OPS) == {"text_encoder": 50, "denoiser": 1000, "scheduler": 0,
                                               "vae_decoder": 150}
    lv = breakdown.level_table(OPS).set_index("level")
    assert lv.loc["in"].tolist() == [64, 2000, 0, 0]  # tokens, flops, self, cross
    assert lv.loc["down.0"].tolist() == [64, 1900, 1700, 200]
    layers = breakdown.layer_table(OPS)
    self0 = layers[(layers["step"] == 0) & (layers["module"] == A1)]
    assert len(self0) == 3 and self0["ops"].tolist() == [1, 1, 1] and self0["flops"].sum() == 850


def test_seconds_account_shows_what_no_op_covers():
    # stage timer: denoiser 0.5 s, text encoder 0.02 s; the ops cover 0.31 s and 0.01 s of them
    acc = breakdown.seconds_account(OPS, {"text_encoder": 0.02, "denoiser": 0.5})
    assert acc["by_stage"]["denoiser"] == 0.5 and acc["by_stage"]["text_encoder"] == 0.02
    assert acc["by_stage_layer_type"]["denoiser"]["unattributed"] == pytest.approx(0.5 - 0.31)
    assert acc["by_layer_type"]["unattributed"] == pytest.approx(0.19 + 0.01)
    assert acc["total"] == pytest.approx(0.02 + 0.5 + 0.001 + 0.05)  # stages not timed keep their ops' sum


def test_op_times_from_a_slower_run_are_scaled_not_subtracted_into_negative_seconds():
    # issue 31: a compiled run's kernel times come from its profiled run, its stage times from an untraced one. Here
    # the denoiser's ops sum to 0.31 s against a 0.124 s stage: ratio 2.5, every denoiser layer type divided by it
    den = OPS[OPS["stage"] == "denoiser"]
    by_type = den.groupby("layer_type")["time_s"].sum()
    acc = breakdown.seconds_account(OPS, {"denoiser": 0.124})
    assert acc["op_time_ratio"] == {"denoiser": pytest.approx(0.31 / 0.124)}
    got = acc["by_stage_layer_type"]["denoiser"]
    assert got["unattributed"] == 0.0 and all(v >= 0 for v in got.values())
    for lt, v in by_type.items():
        assert got[lt] == pytest.approx(v / 2.5)
    assert sum(got.values()) == pytest.approx(0.124) and acc["by_stage"]["denoiser"] == 0.124
    assert sum(acc["by_level"].values()) == pytest.approx(0.124)  # every denoiser row of OPS has a level
    # a stage whose ops fit in it is left as it was: no ratio, the rest unattributed
    assert "op_time_ratio" not in breakdown.seconds_account(OPS, {"denoiser": 0.5})


# -- savings -----------------------------------------------------------------------------------------------------
CALLS = [  # the self-attention call at both steps keeps a quarter, then half, of its entries; predictor 10 FLOPs
    {"layer": "down_blocks.0.attentions.0.transformer_blocks.0.attn1", "step": 0, "attn_kind": "self",
     "entries": 100, "kept": 25, "dense_flops": 850, "flops": 222, "predictor_flops": 10},
    {"layer": "down_blocks.0.attentions.0.transformer_blocks.0.attn1", "step": 1, "attn_kind": "self",
     "entries": 100, "kept": 50, "dense_flops": 850, "flops": 435, "predictor_flops": 10},
    {"layer": "down_blocks.0.attentions.0.transformer_blocks.0.attn2", "step": 0, "attn_kind": "cross",
     "entries": 40, "kept": 40, "dense_flops": 200, "flops": 200, "predictor_flops": 0},
]


def test_call_account():
    a = savings.account(CALLS)
    assert a["dense_flops"] == 1900 and a["flops"] == 857 and a["predictor_flops"] == 20
    assert a["kept_fraction"] == pytest.approx(115 / 240)
    assert a["share_saved"] == pytest.approx(1 - 857 / 1900)
    assert a["by_kind"]["self"]["share_saved"] == pytest.approx(1 - 657 / 1700)
    assert a["by_kind"]["cross"]["share_saved"] == 0


def test_approximate_account_reweights_attention_and_adds_the_predictor():
    a = savings.approximate_account(OPS, CALLS)
    # step 0's self parts x 1/4 (850 -> 212.5), step 1's x 1/2 (850 -> 425); cross kept whole; +20 predictor
    assert a["attention_flops_dense"] == 1900
    assert a["attention_flops"] == pytest.approx(212.5 + 425 + 200 + 20)
    assert a["flops_total"] == pytest.approx(4310 - 1700 + 637.5 + 20)
    assert a["end_to_end_share_saved"] == pytest.approx(1 - (4310 - 1062.5 + 20) / 4310)
    assert a["flops_by_layer_type"]["attn_predictor"] == 20
    assert a["flops_saved_by_stage"]["denoiser"] == pytest.approx(1700 - 637.5 - 20)
    # the denoiser's 3900 FLOPs less those saved: its own share saved, the headline's first figure
    assert a["denoiser_share_saved"] == pytest.approx((1700 - 637.5 - 20) / 3900)
    assert a["flops_saved_by_layer_type"]["attn_predictor"] == -20
    assert a["kept_fraction"] == pytest.approx(115 / 240)
    assert savings.approximate_account(OPS, None)["end_to_end_share_saved"] == 0
    assert savings.end_to_end_saved(75, 100) == 0.25 and savings.end_to_end_saved(5, 0) == 0.0
    assert savings.denoiser_prefix(OPS) == "unet"


def test_steps_ran_and_added_ops():
    reused = OPS.drop(index=[8, 9, 10])  # step 1 skips the attention block: a reuse method's run
    steps = savings.steps_ran(reused, OPS)
    assert [s["step"] for s in steps] == [0, 1] and steps[1]["flops"] == 1000
    assert steps[0]["blocks"] == ["conv_in", "down_blocks.0"] and steps[1]["blocks"] == ["conv_in"]
    assert steps[0]["partial"] == [] and steps[1]["partial"] == []
    extra = pd.concat([OPS, OPS.iloc[[6]]])  # one more scheduler op at step 0: the method's own bookkeeping
    added = savings.added_ops(OPS, extra)
    assert added == {"ops": 1, "flops": 10.0, "by_op": {"aten.x": 1}}


# -- scaling -----------------------------------------------------------------------------------------------------
def test_layer_classes_and_totals():
    assert scaling.layer_class(OPS).tolist()[:3] == ["linear", "conv", "attn_score.self"]
    t = scaling.class_totals(OPS, "flops", "denoiser")
    assert t["total"] == 3900 and t["conv"] == 2000
    assert t["self_attention"] == 1700 and t["cross_attention"] == 200
    assert t["self_attention_core"] == 1700 and t["attention_core"] == 1700 and t["linear_layers"] == 0
    assert t["attn_score.self"] == 800 and t["attn_score.cross"] == 200


def test_bottlenecks_and_attention_memory():
    top = scaling.bottlenecks(OPS[OPS["stage"] == "denoiser"], "flops", 2)
    # attn_score.self and attn_pv.self tie at 800: equal costs go by level, then class name
    assert [(b["level"], b["layer_class"], b["flops"]) for b in top] == [("in", "conv", 2000.0),
                                                                          ("down.0", "attn_pv.self", 800.0)]
    assert top[0]["share"] == pytest.approx(2000 / 3900)
    mem = scaling.attention_memory(OPS)
    # scores (2, 8, 64, 64) fp32: 2·8·64·64·4 B; fused: q, k, v, out = 4 · 2·8·64·40 elements · 4 B
    assert mem["materialized_bytes"] == 2 * 8 * 64 * 64 * 4 and mem["fused_bytes"] == 4 * 2 * 8 * 64 * 40 * 4


# -- roofline ----------------------------------------------------------------------------------------------------
PRESET = HardwarePreset("toy", "a toy machine", "cpu", "hand-made", 1e9, 100.0,
                        {"float32": 1000.0, "float16": 2000.0, "bfloat16": 2000.0})


def test_roofline_of_one_op_and_of_the_table():
    r = roofline.roofline(1000.0, 10.0, 1000.0, 100.0)  # 1 s compute vs 0.1 s memory: compute-bound
    assert float(r["roofline_s"]) == 1.0 and str(r["bound"]) == "compute" and float(r["intensity"]) == 100.0
    r = roofline.roofline(10.0, 1000.0, 1000.0, 100.0)  # 0.01 s compute vs 10 s memory
    assert float(r["roofline_s"]) == 10.0 and str(r["bound"]) == "memory"
    assert float(roofline.roofline(0.0, 0.0, 1000.0, 100.0)["roofline_s"]) == 0.0
    roof = roofline.op_roofline(OPS, PRESET)
    # row 1: 1000 FLOPs / 1000 = 1 s vs 60 B / 100 = 0.6 s; row 3 (softmax): 50 FLOPs, no bytes: 0.05 s
    assert roof.loc[1, "roofline_s"] == 1.0 and roof.loc[1, "bound"] == "compute"
    assert roof.loc[3, "roofline_s"] == pytest.approx(0.05) and roof.loc[3, "intensity"] == math.inf
    pred = roofline.prediction(roof)
    # per row max(flops / 1000, bytes / 100)
    expected = [0.15, 1.0, 0.4, 0.05, 0.4, 0.2, 0.08, 1.0, 0.4, 0.05, 0.4, 0.6]
    assert pred["total_s"] == pytest.approx(sum(expected))
    assert pred["by_stage"]["vae_decoder"] == pytest.approx(0.6)
    assert pred["compute_bound_share"] == pytest.approx((sum(expected) - 0.15 - 0.08 - 0.6) / sum(expected))


def test_roofline_against_measured_seconds():
    seconds = breakdown.seconds_account(OPS, {"denoiser": 0.5})
    s = roofline.summary(OPS, PRESET, seconds, device="cpu")
    vm = s["versus_measured"]
    den = vm["by_stage"]["denoiser"]
    # rows 1-5 and 7-10 of the roofline table above: 1.0 + 0.4 + 0.05 + 0.4 + 0.2 + 1.0 + 0.4 + 0.05 + 0.4
    assert den["predicted_s"] == pytest.approx(3.9) and den["measured_s"] == 0.5
    assert den["error"] == pytest.approx(3.9 / 0.5 - 1)
    assert den["fraction_of_peak"] == pytest.approx(3900 / 0.5 / 1000)
    assert s["ridge_intensity"] == 10.0 and s["dtype"] == "float32" and "caveat" not in s
    assert "caveat" in roofline.summary(OPS, PRESET, seconds, device="cuda")


# -- sweep, findings ---------------------------------------------------------------------------------------------
def _point(side: int, scale: float) -> dict:
    ops = OPS.assign(flops=(OPS["flops"] * scale).round().astype("int64"))
    run = {"height": side, "width": side, "batch": 1, "family": "sd", "denoiser_kind": "unet",
           "flops": {"by_stage": {}}, "peak_memory_bytes": 0}
    return sweep_analysis.point_summary(f"{side}x{side}-b1", run, ops)


def test_sweep_exponents_and_crossover():
    # doubling the side multiplies every cost by 4 (k = 2); a point summary keeps the denoiser's class totals
    pts = [_point(64, 1.0), _point(128, 4.0)]
    assert pts[0]["flops"]["denoiser"]["conv"] == 2000 and pts[0]["denoiser"] == "unet"
    f = sweep_analysis.findings(pts)
    assert f["exponents"]["flops"]["total"]["k"] == pytest.approx(2.0)
    assert f["crossover_pair"] == ["self_attention", "conv"]
    assert share_classes(f) == ("conv", "self_attention", "cross_attention", "ffn", "norm")
    text = sweep_findings({"findings": f})
    assert text[0].startswith("Self-attention: 43.6% of UNet FLOPs at 128 px, growing as side^2.00")  # 6800 / 15600
    assert text[1].startswith("Convolution: 51.3% of UNet FLOPs at 128 px")  # 8000 of 15600


def test_approx_and_sparsity_findings():
    results = [{"method": "dense", "ssim": 1.0, "accuracy": 0.9, "denoiser_s": 2.0, "attention_share_saved": 0.0},
               {"method": "block", "value": 0.9, "ssim": 0.95, "accuracy": 0.88, "denoiser_s": 1.0,
                "attention_share_saved": 0.6, "end_to_end_share_saved": 0.2},
               {"method": "block", "value": 0.5, "ssim": 0.7, "accuracy": 0.5, "denoiser_s": 0.8,
                "attention_share_saved": 0.8, "end_to_end_share_saved": 0.3}]
    out = approx_findings({"results": results})
    assert out[0].startswith("block: up to 60.0% of attention FLOPs (20.0% end to end) saved at block=0.9")
    assert "0.50x dense" in out[0] and out[1].startswith("Dense generation: 90%")
    state = {"eps": [1e-4, 1e-3], "taus": [0.9, 0.95], "note": None,
             "summary": {"64x64": {"by_kind": {"self": {"below_0.001": 0.5, "keys_frac_0.95": 0.25,
                                                        "entropy": 0.7}}}}}
    assert eps_tau(state) == (1e-3, 0.95)
    assert sparsity_headline(state) == ["64x64, self-attention: 50.0% of probabilities are below 0.001; 25.0% of "
                                        "the keys cover 95% of each row's mass (row entropy 0.70 of uniform)."]


def test_sparsity_means():
    table = pd.DataFrame({"height": [64] * 4, "width": [64] * 4, "layer": ["a", "a", "b", "b"],
                          "level": ["down.0", "down.0", "mid", "mid"], "attn_kind": ["self", "cross"] * 2,
                          "step": [0, 0, 1, 1], "head": [0] * 4, "entropy": [0.2, 0.4, 0.6, 0.8]})
    s = sparsity.summarize(table)["64x64"]
    assert s["calls"] == 4 and s["by_kind"]["self"]["entropy"] == pytest.approx(0.4)
    assert s["by_level"]["mid"]["entropy"] == pytest.approx(0.7) and s["by_step"]["0"]["entropy"] == pytest.approx(0.3)


# -- compare, quality --------------------------------------------------------------------------------------------
def test_compare_profiles_by_ratio_to_the_first():
    from pathlib import Path

    from diffprobe.analyses.compare import compare, rows

    acc = {"flops": breakdown.account(OPS, "flops"), "bytes": breakdown.account(breakdown.with_bytes(OPS), "bytes"),
           "stages": {"denoiser": 0.5, "total": 1.0}}
    twice = {**acc, "stages": {"denoiser": 1.0, "total": 2.0}, "model": "other"}
    c = compare([(Path("a"), "profile", {**acc, "model": "tiny"}), (Path("b"), "profile", twice)])
    assert c["baseline"] == "a" and c["differs"] == ["model"]
    assert c["metrics"]["flops.total"] == {"a": 4310, "b": 4310} and c["ratios"]["seconds.total"]["b"] == 2.0
    assert c["metrics"]["flops.attn_pv"]["a"] == 800 and c["metrics"]["bytes.total"]["a"] == 315
    long = rows(c)
    assert {"metric": "seconds.denoiser", "run": "b", "value": 1.0, "ratio_to_baseline": 2.0} in long


def test_quality_of_identical_and_perturbed_images():
    import torch

    from diffprobe.analyses.quality import quality

    img = torch.full((1, 3, 16, 16), 0.5)
    lat = [torch.ones(4)]
    same = quality({"images": img, "latents": lat}, {"images": img.clone(), "latents": lat})
    assert same["psnr"] is None and same["identical"] and same["ssim"] == pytest.approx(1.0)
    off = quality({"images": img, "latents": lat}, {"images": img + 0.1, "latents": [torch.ones(4) * 1.5]})
    # a uniform error of 0.1 on a [0, 1] range: PSNR = 10·log10(1 / 0.01) = 20 dB; latents 0.5·|1| / |1| = 0.5
    assert off["psnr"] == pytest.approx(20.0, abs=1e-4) and off["latent_rel_error"] == [pytest.approx(0.5)]


def test_operator_times_from_another_run_are_not_called_negative_unattributed():
    from diffprobe.analyses.findings import profile_findings

    # the ops sum to 0.31 s in the denoiser; a stage time of 0.25 s would leave -0.06 s "unattributed"
    seconds = breakdown.seconds_account(OPS, {"denoiser": 0.25})
    found = profile_findings({"seconds": seconds})
    assert not any("-" in f.split("%")[0] for f in found if "%" in f), found
    assert any("operator times add up to 1.24x its stage time" in f for f in found), found
