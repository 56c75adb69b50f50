"""Step-level reuse (DeepCache through PyPI's package) in the account: no-op settings, FLOPs removed against an
independent count from the dense records, analytic plan replay against the measured account, composition with
approximate attention, and bad settings."""

import numpy as np
import pytest
from PIL import Image

import diffprobe
from diffprobe.cli import main

KW = dict(model="tiny", steps=4, sample_steps=0, height=128, width=128)

# what DeepCache's branch 0 runs at a cached step of tiny's UNet (4 down and 4 up blocks, 2 layers per up block):
# the input and time embedding, the last up block's own ops and its last layer (resnets.1, attentions.1: the
# package numbers up-block layers from the end), and the output head; every down block, the mid block and the
# other up blocks return what the last full step cached
RUNS_WHEN_CACHED = ("unet.conv_in", "unet.time_proj", "unet.time_embedding", "unet.up_blocks.3.resnets.1",
                    "unet.up_blocks.3.attentions.1", "unet.conv_norm_out", "unet.conv_act", "unet.conv_out")


def _runs_when_cached(module: str) -> bool:
    return module in ("unet", "unet.up_blocks.3") or any(
        module == m or module.startswith(m + ".") for m in RUNS_WHEN_CACHED)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    dense = diffprobe.profile(**KW, out=str(root / "dense"))
    dc = diffprobe.profile(**KW, approx="deepcache=2", out=str(root / "dc"))
    return root, dense, dc


@pytest.mark.slow
def test_flops_removed_equal_an_independent_count_of_the_skipped_blocks(runs):
    _, dense, dc = runs
    ops = dense.ops
    step0 = ops[(ops["stage"] == "denoiser") & (ops["step"] == 0)]
    skipped_per_cached_step = float(step0.loc[~step0["module"].map(_runs_when_cached), "flops"].sum())
    cached_steps = 2  # steps 1 and 3 of 4 at interval 2
    # DeepCache finds the step with list(timesteps).index(t.item()): per step one unbind (the list) and one item,
    # then i + 1 comparisons at step i, each a one-FLOP eq and its truth test (is_nonzero)
    lookups = sum(i + 1 for i in range(4))
    ap = dc.to_dict()["approx"]
    assert ap["method_overhead"] == {"ops": 4 + 4 + 2 * lookups, "flops": lookups, "by_op": {
        "aten.eq.Scalar": lookups, "aten.is_nonzero.default": lookups, "aten.item.default": 4,
        "aten.unbind.int": 4}}
    assert ap["flops_saved_by_stage"]["denoiser"] == pytest.approx(cached_steps * skipped_per_cached_step - lookups,
                                                               rel=1e-12)
    assert ap["flops_saved_by_stage"]["vae_decoder"] == 0 and ap["flops_saved_by_stage"]["text_encoder"] == 0
    full = [s for s in ap["steps"] if s["step"] % 2 == 0]
    cached = [s for s in ap["steps"] if s["step"] % 2 == 1]
    assert {"mid_block", "down_blocks.0"} <= set(full[0]["blocks"]) and "mid_block" not in cached[0]["blocks"]
    assert cached[0]["blocks"] == ["conv_act", "conv_in", "conv_norm_out", "conv_out", "time_embedding", "time_proj",
                                   "up_blocks.3"]
    assert ap["dense_untraced_denoiser_seconds"] > 0 and ap["denoiser_seconds"] > 0


def test_interval_one_is_dense_bit_for_bit(runs):
    root, dense, _ = runs
    one = diffprobe.profile(**KW, approx="deepcache=1", out=str(root / "one"))
    ap = one.to_dict()["approx"]
    # nothing skipped: the only difference in the account is DeepCache's own step lookup, which it still runs
    assert ap["flops_saved_by_stage"]["denoiser"] == -ap["method_overhead"]["flops"] < 0
    assert not any(v for k, v in ap["flops_saved_by_stage"].items() if k != "denoiser")
    assert [s["blocks"] for s in ap["steps"]] == [ap["steps"][0]["blocks"]] * 4
    same = np.asarray(Image.open(root / "one" / "image_approx.png"))
    assert np.array_equal(same, np.asarray(Image.open(root / "dense" / "image.png")))


def test_analytic_plan_replay_equals_the_measured_account(runs, tmp_path):
    _, _, dc = runs
    an = diffprobe.profile(**KW, mode="analytic", approx="deepcache=2", out=str(tmp_path / "an"))
    a, m = an.to_dict()["approx"], dc.to_dict()["approx"]
    assert [s["blocks"] for s in a["steps"]] == [s["blocks"] for s in m["steps"]]
    # every module's ops replay exactly; DeepCache's own step lookup (i + 1 comparisons at step i) replays from the
    # first step of each kind: steps 2 and 3 count steps 0's and 1's, 1 + 2 comparisons instead of 3 + 4
    assert m["method_overhead"]["flops"] - a["method_overhead"]["flops"] == (3 + 4) - (1 + 2)
    assert a["flops_total"] - a["method_overhead"]["flops"] == m["flops_total"] - m["method_overhead"]["flops"]
    for lt, v in m["flops_by_layer_type"].items():
        # a comparison is an elementwise op in the account
        extra = m["method_overhead"]["flops"] - a["method_overhead"]["flops"] if lt == "elementwise" else 0
        assert a["flops_by_layer_type"][lt] == v - extra, lt


@pytest.mark.slow
def test_composed_settings_account_for_both(runs, tmp_path):
    _, dense, dc = runs
    both = diffprobe.profile(**KW, approx="block=0.5+deepcache=2", out=str(tmp_path / "both"))
    b, d = both.to_dict()["approx"], dc.to_dict()["approx"]
    assert b["setting"] == "block=0.5+deepcache=2"
    assert [s["blocks"] for s in b["steps"]] == [s["blocks"] for s in d["steps"]]  # the reuse plan as before
    # attention re-weighted on top of reuse: the composed total is the reuse total less the attention the block
    # method dropped, plus its predictor
    dropped = d["attention_flops"] - (b["attention_flops"] - b["flops_by_layer_type"].get("attn_predictor", 0.0))
    assert b["flops_total"] == pytest.approx(d["flops_total"] - dropped
                                             + b["flops_by_layer_type"].get("attn_predictor", 0.0), rel=1e-12)
    assert b["kept_fraction"] < 1 and b["end_to_end_share_saved"] > d["end_to_end_share_saved"]


@pytest.mark.parametrize("setting,needle", [
    ("deepcache=0", "whole number of steps >= 1"), ("deepcache=2.5", "whole number"),
    ("dedup=2", "unknown method"), ("deepcache=2+deepcache=3", "one reuse method"),
    ("block=0.5+topk=4", "one attention method"), ("deepcache", "METHOD=VALUE"),
])
def test_bad_settings(setting, needle, tmp_path, capsys):
    rc = main(["profile", "--model", "tiny", "--steps", "1", "-q", "--approx", setting, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err


def test_analytic_refuses_attention_methods(tmp_path, capsys):
    rc = main(["profile", "--model", "tiny", "--steps", "1", "-q", "--mode", "analytic", "--approx",
               "block=0.5+deepcache=2", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs a measured run with op tracing for an attention method" in err, err


@pytest.mark.slow
def test_approx_command_with_reuse_and_composed_settings(tmp_path, capsys):
    import json

    out = tmp_path / "ap"
    assert main(["approx", "--model", "digits", "--method", "deepcache", "--interval", "1,2", "--setting",
                 "block=0.9+deepcache=2", "--steps", "4", "--per-digit", "1", "--out", str(out), "-q"]) == 0
    rows = {r["setting"] if r["method"] != "dense" else "dense": r
            for r in json.loads((out / "approx.json").read_text())["results"]}
    assert set(rows) == {"dense", "deepcache=1", "deepcache=2", "block=0.9+deepcache=2"}
    assert rows["deepcache=1"]["identical"] and rows["deepcache=1"]["psnr"] is None  # interval 1: dense, bit-exact
    two = rows["deepcache=2"]
    assert two["end_to_end_share_saved"] > 0.2 and two["denoiser_flops_saved"] > 0 and not two["identical"]
    # digits' self-attention is near-uniform (256 tokens, four 64-blocks at the top level): covering 90% of the mass
    # takes every block, so the block method keeps everything and adds its predictor; the composed setting saves
    # the reuse's FLOPs less the predictor's, with the same images
    both = rows["block=0.9+deepcache=2"]
    assert both["kept_fraction"] == 1.0 and both["predictor_flops"] > 0
    assert both["attention_flops"] == pytest.approx(two["attention_flops"] + both["predictor_flops"], rel=1e-12)
    assert both["ssim"] == pytest.approx(two["ssim"], abs=1e-6)
    assert (out / "figures" / "pareto.svg").exists()
    for argv, needle in ((["--method", "deepcache", "--interval", "0"], "whole number"),
                         (["--method", "threshold", "--setting", "foo=1"], "unknown method")):
        rc = main(["approx", "--model", "digits", "--steps", "1", "--per-digit", "1", "-q", *argv,
                   "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and needle in err, err


@pytest.mark.slow
def test_tgate_gates_cross_attention_and_guidance(tmp_path):
    from diffprobe.methods.reuse import TGate
    from diffprobe.run.profile import ProfileConfig, trace_with_reuse

    kw = dict(model="digits", steps=4, sample_steps=0)
    diffprobe.profile(**kw, out=str(tmp_path / "dense"))
    late = diffprobe.profile(**kw, approx="tgate=5", out=str(tmp_path / "late"))  # the gate after the last step
    assert np.array_equal(np.asarray(Image.open(tmp_path / "late" / "image_approx.png")),
                          np.asarray(Image.open(tmp_path / "dense" / "image.png")))
    assert late.to_dict()["approx"]["end_to_end_share_saved"] == 0
    gated = diffprobe.profile(**kw, approx="tgate=2", out=str(tmp_path / "gated"))
    an = diffprobe.profile(**kw, mode="analytic", approx="tgate=2", out=str(tmp_path / "an"))
    m, a = gated.to_dict()["approx"], an.to_dict()["approx"]
    assert m["flops_total"] == a["flops_total"]  # the package's schedule replayed on meta: the measured account
    assert {k: v for k, v in m["flops_by_layer_type"].items() if v} == {
        k: v for k, v in a["flops_by_layer_type"].items() if v}
    ops = trace_with_reuse(ProfileConfig(**kw, mode="analytic"), TGate(2))
    unet = ops[ops["stage"] == "denoiser"]
    score = unet[unet["layer_type"] == "attn_score"]
    # gate 2: steps 0 and 1 compute cross-attention (step 1 caches it); from step 2 on it is reused, and the
    # guidance batch is gone (one branch): self-attention scores run on batch 1 instead of 2
    assert set(score.loc[score["step"] >= 2, "attn_kind"]) == {"self"}
    assert set(score.loc[score["step"] < 2, "attn_kind"]) == {"self", "cross"}
    assert {s[0][0] for s in score.loc[score["step"] >= 2, "input_shapes"]} == {1}
    assert {s[0][0] for s in score.loc[score["step"] < 2, "input_shapes"]} == {2}


def test_tgate_refuses_attention_methods_and_other_pipelines(tmp_path, capsys):
    rc = main(["profile", "--model", "tiny", "--steps", "1", "-q", "--approx", "block=0.5+tgate=2", "--out",
               str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot run beside an attention method" in err, err
    rc = main(["profile", "--model", "tiny-flux", "--mode", "analytic", "--steps", "1", "-q", "--approx", "tgate=2",
               "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "tgate applies to" in err and "FluxPipeline" in err, err
    rc = main(["profile", "--model", "tiny", "--mode", "analytic", "--steps", "1", "-q", "--approx",
               "tgate=2:self_cache=2", "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "self_cache must be 0" in err, err


@pytest.mark.parametrize("model, size", [("sdxl", 128), ("tiny-pixart", None)])
def test_tgate_on_sdxl_and_pixart_is_dense_without_guidance_less_the_gated_cross_attention(model, size, tmp_path):
    """After the gate the package's SDXL and PixArt loops run one branch (no CFG) and skip every cross-attention
    module, dividing each cached output by its rescale factor: such a step's FLOPs equal an unguided dense step's,
    less its ``attn2`` modules' records, plus one division per element of each cached output."""
    import math

    from diffprobe.methods.reuse import TGate
    from diffprobe.run.profile import ProfileConfig, run_profile, trace_with_reuse

    kw = dict(model=model, steps=4, mode="analytic", height=size, width=size)
    gated = trace_with_reuse(ProfileConfig(**kw), TGate(2))
    unguided = run_profile(ProfileConfig(**kw, guidance=1.0, out=str(tmp_path))).ops
    for step in (2, 3):
        g = gated[(gated["stage"] == "denoiser") & (gated["step"] == step)]
        n = unguided[(unguided["stage"] == "denoiser") & (unguided["step"] == step)]
        cross = n["module"].str.contains(r"\.attn2(?:\.|$)")
        outs = n.loc[n["module"].str.endswith(".attn2.to_out.0"), "output_shapes"]
        assert len(outs) > 0
        divisions = sum(math.prod(o[0]) for o in outs)
        assert g["flops"].sum() == n["flops"].sum() - n.loc[cross, "flops"].sum() + divisions
        assert not g["module"].str.contains(r"\.attn2\.to_").any()


def test_tgate_self_cache_follows_the_packages_schedule():
    # the package's self-attention caching: before the gate, after warm_up 2, self-attention is computed every
    # sp_interval 5 steps and reused in between; after the gate, every fi_interval 1 step
    from types import SimpleNamespace

    from tgate.tgate_utils import tgate_scheduler

    from diffprobe.methods.reuse import TGate

    t = TGate(8, self_cache=1)
    t.pipe = SimpleNamespace(scheduler=SimpleNamespace(timesteps=[0] * 10, num_inference_steps=10, order=1))
    for i in range(10):
        ca, sa, keep = tgate_scheduler(cur_step=i, gate_step=8, sp_interval=5, fi_interval=1, warm_up=2)
        assert t.plan_key(i) == (tuple(sorted(ca.items())), tuple(sorted(sa.items())), keep, i < 8)
    assert any(dict(t.plan_key(i)[1]).get("reuse") for i in range(8))  # some steps reuse self-attention
    gate_only = TGate(8)
    gate_only.pipe = t.pipe
    assert not any(dict(gate_only.plan_key(i)[1]).get("reuse") for i in range(10))  # the gate alone never does


def test_tgate_plan_follows_the_packages_loop_through_scheduler_warmup():
    # PNDM makes one extra evaluation: the package's loop counts its steps after it (cur = i - 1) and runs the
    # first plainly; with gate 2 the steps are: plain, before the gate (CFG), the gate (cache), after (no CFG)
    from types import SimpleNamespace

    from diffprobe.methods.reuse import TGate

    t = TGate(2)
    t.pipe = SimpleNamespace(scheduler=SimpleNamespace(timesteps=[0] * 4, num_inference_steps=3, order=1))
    keys = [t.plan_key(i) for i in range(4)]
    assert keys[0] == ("plain", True) and len(set(keys)) == 4
    assert [k[-1] for k in keys[1:]] == [True, True, False]  # CFG runs until the gate
    assert dict(keys[2][0]) == {"cache": True, "reuse": False} and dict(keys[3][0]) == {"cache": False, "reuse": True}


def test_deepcache_branch_1_runs_one_more_layer_at_each_end(tmp_path, capsys):
    """``deepcache=3:branch=1`` (DeepCacheSDHelper's cache_branch_id 1: layer id 1 of block 0): a cached step runs,
    beyond branch 0's, the first layer of down_blocks.0 and the first layer of the last up block (the package counts
    an up block's layers from its end, so branch 0 already ran its last). The difference between the two branches'
    cached steps equals those four modules' FLOPs in a dense trace."""
    from diffprobe.run.profile import ProfileConfig, run_profile

    cached = {}
    for b in (0, 1):
        r = run_profile(ProfileConfig(model="tiny", steps=6, mode="analytic", approx=f"deepcache=3:branch={b}",
                                      out=str(tmp_path / f"b{b}")))
        steps = r.to_dict()["approx"]["steps"]
        assert r.to_dict()["approx"]["setting"] == f"deepcache=3:branch={b}"
        cached[b] = steps[1]["flops"]
        assert steps[1]["flops"] < steps[0]["flops"]  # step 1 is cached, step 0 full
    dense = run_profile(ProfileConfig(model="tiny", steps=1, mode="analytic", out=str(tmp_path / "dense"))).ops
    den = dense[dense["stage"] == "denoiser"]
    extra = sum(den.loc[den["module"].str.startswith(p), "flops"].sum() for p in (
        "unet.down_blocks.0.resnets.0", "unet.down_blocks.0.attentions.0", "unet.up_blocks.3.resnets.0",
        "unet.up_blocks.3.attentions.0"))
    assert cached[1] - cached[0] == extra
    for bad, needle in (("deepcache=3:brunch=1", "no option 'brunch' (its options: branch)"),
                        ("tgate=5:branch=1", "tgate has no option 'branch'"),
                        ("deepcache=3:branch=x", "branch 'x' is not a whole number")):
        assert main(["profile", "--model", "tiny", "--mode", "analytic", "--approx", bad, "--out",
                     str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err


def test_tgate_without_a_cfg_batch_uses_the_packages_lcm_mode(tmp_path):
    """No CFG batch (PixArt at guidance 0, as PixArt-LCM runs): the package's loop runs in its LCM mode (the cached
    cross-attention keeps its batch of one); measured and analytic agree, and the gate saves cross-attention only."""
    from diffprobe.run.profile import ProfileConfig, run_profile

    kw = dict(model="tiny-pixart", steps=4, guidance=0.0, approx="tgate=2")
    m = run_profile(ProfileConfig(**kw, out=str(tmp_path / "m"))).to_dict()["approx"]
    a = run_profile(ProfileConfig(**kw, mode="analytic", out=str(tmp_path / "a"))).to_dict()["approx"]
    assert m["flops_total"] == a["flops_total"] and 0 < m["denoiser_share_saved"] < 0.5
    assert m["flops_saved_by_layer_type"].get("attn_qkv", 0) > 0  # the gated cross-attention's projections


def test_lcm_sdxl_is_sdxl_with_the_guidance_embedding_and_no_cfg_batch():
    from diffprobe.models.registry import build_components, count_params, get_spec

    lcm, base = (build_components(get_spec(m), "meta")["unet"] for m in ("lcm-sdxl", "sdxl"))
    # the guidance scale enters as an embedding: one bias-free linear, 256 -> the time embedding's 320 inputs
    assert count_params(lcm) - count_params(base) == 256 * 320
    spec = get_spec("lcm-sdxl")
    assert spec.default_steps == 4 and not spec.uses_cfg(spec.default_guidance)


def test_the_per_step_view_names_the_layers_of_a_block_that_ran_in_part(tmp_path):
    # DeepCache branch 1 on the tiny UNet: a cached step runs down_blocks.0's first resnet and attention, not its
    # downsampler; the whole of up_blocks.3 (its layers counted from the end); nothing of the deep blocks
    from diffprobe.run.profile import ProfileConfig, run_profile

    r = run_profile(ProfileConfig(model="tiny", steps=3, mode="analytic", approx="deepcache=3:branch=1",
                                  out=str(tmp_path)))
    cached = r.to_dict()["approx"]["steps"][1]
    assert cached["partial"] == ["down_blocks.0"]
    assert cached["partial_ran"] == {"down_blocks.0": ["attentions.0", "resnets.0"]}
    assert "up_blocks.3" in cached["blocks"] and "mid_block" not in cached["blocks"]


def test_a_settings_account_carries_the_dense_conventions(tmp_path):
    """``profile --approx``: the setting's MACs, bytes and per-image-per-evaluation figures sum the records it
    stores (``ops_approx.parquet``), and dense's the run's own records; an attention method leaves the literature's
    MACs as they are (its savings are in the attention products, which that convention leaves out)."""
    import pyarrow.parquet as pq

    from diffprobe.run.profile import ProfileConfig, run_profile

    for setting in ("deepcache=2", "threshold=0.05"):
        r = run_profile(ProfileConfig(model="tiny", steps=4, mode="analytic" if "deep" in setting else "measured",
                                      approx=setting, out=str(tmp_path / setting)))
        ap, dense = r.to_dict()["approx"], r.ops
        mine = pq.read_table(tmp_path / setting / ap["records"]).to_pandas()
        den = mine[mine["stage"] == "denoiser"]
        assert ap["macs_conv_linear"]["denoiser"] == den["macs_conv_linear"].sum()
        assert ap["bytes_total"] == (mine["bytes_read"] + mine["bytes_written"]).sum()
        assert ap["flops_by_stage"]["denoiser"] == pytest.approx(den["flops"].sum(), rel=1e-6)  # whole FLOPs kept
        per, evals = ap["per_image_and_eval"], ap["denoiser_evals_accounted"]  # measured: the sampled steps
        assert per["images"] == 1 and per["evals"] == evals == den["step"].nunique()
        assert per["macs_conv_linear"] == ap["macs_conv_linear"]["denoiser"] / evals
        dden = dense[dense["stage"] == "denoiser"]
        assert ap["dense_per_image_and_eval"]["macs_conv_linear"] == dden["macs_conv_linear"].sum() / evals
        if setting.startswith("threshold"):
            assert ap["macs_conv_linear"] == ap["dense_macs_conv_linear"] and ap["attention_share_saved"] > 0
        else:
            assert ap["macs_conv_linear"]["denoiser"] < ap["dense_macs_conv_linear"]["denoiser"]
