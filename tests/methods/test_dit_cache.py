"""diffusers' cache hooks as reuse settings on a diffusion transformer (tiny Flux): no-op values bit-identical to
dense, Pyramid Attention Broadcast's removed FLOPs against an independent count (the scheduler's timesteps, the
paper's rule and the dense records), analytic plan == measured account, and the refusals."""

import numpy as np
import pytest
from PIL import Image

import diffprobe
from diffprobe.cli import main
from diffprobe.models.registry import get_spec

KW = dict(model="tiny-flux", steps=8, sample_steps=0)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit-cache")
    return root, diffprobe.profile(**KW, out=str(root / "dense"))


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["first-block-cache=0", "pab=1", "faster-cache=1", "taylorseer=1"])
def test_noop_values_are_dense_bit_for_bit(dense, setting):
    root, d = dense
    name = setting.replace("=", "_")
    r = diffprobe.profile(**KW, approx=setting, out=str(root / name)).to_dict()["approx"]
    img = np.asarray(Image.open(root / name / "image_approx.png"))
    assert np.array_equal(img, np.asarray(Image.open(root / "dense" / "image.png")))
    assert r["flops_saved_by_stage"]["denoiser"] <= 0  # nothing skipped (a method may add its own checks)


def test_pab_removes_the_attention_of_the_steps_its_rule_skips(dense):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    root, d = dense
    r = diffprobe.profile(**KW, approx="pab=3", out=str(root / "pab3")).to_dict()["approx"]
    # FluxPipeline's schedule for 8 steps over 16 image tokens (tiny-flux at 64 px)
    conf = get_spec("tiny-flux").config("scheduler")
    sched = FlowMatchEulerDiscreteScheduler.from_config(conf)
    mu = calculate_shift(16, conf["base_image_seq_len"], conf["max_image_seq_len"], conf["base_shift"],
                         conf["max_shift"])
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / 8, 8), mu=mu, device="cpu")
    ts = [float(t) for t in sched.timesteps]
    # PAB (Zhao et al.; diffusers' hook): a layer's attention is reused at its i-th call when i > 0, the timestep
    # is inside the window (100, 800) and i is not a multiple of the skip range
    skipped = [i for i, t in enumerate(ts) if i > 0 and 100 < t < 800 and i % 3 != 0]
    assert skipped  # the window covers some steps here
    ops = d.ops
    step0 = ops[(ops["stage"] == "denoiser") & (ops["step"] == 0)]
    attn = step0["module"].str.contains(r"transformer_blocks\.\d+\.attn(?:\.|$)")
    per_step = float(step0.loc[attn, "flops"].sum())
    # the hook's own work: the window test `100 < t < 800` on the timestep tensor, at every call of each of the 3
    # attention layers (the second comparison only when the first holds: Python's chained comparison)
    checks = 3 * sum(1 + (t > 100) for t in ts)
    assert r["method_overhead"]["flops"] == checks
    assert r["flops_saved_by_stage"]["denoiser"] == pytest.approx(len(skipped) * per_step - checks, rel=1e-12)
    ran = {s["step"]: s["flops"] for s in r["steps"]}
    full = float(step0["flops"].sum())
    assert all(full - per_step < ran[i] < full - per_step + 10 for i in skipped)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["pab=3", "faster-cache=2", "taylorseer=3"])
def test_analytic_plan_equals_the_measured_account(dense, setting):
    root, _ = dense
    name = setting.replace("=", "_")
    m = diffprobe.profile(**KW, approx=setting, out=str(root / f"m-{name}")).to_dict()["approx"]
    a = diffprobe.profile(**KW, approx=setting, mode="analytic", out=str(root / f"a-{name}")).to_dict()["approx"]
    assert a["flops_saved_by_stage"]["denoiser"] == pytest.approx(m["flops_saved_by_stage"]["denoiser"], rel=1e-12)
    assert [s["flops"] for s in a["steps"]] == pytest.approx([s["flops"] for s in m["steps"]], rel=1e-12)
    assert m["flops_saved_by_stage"]["denoiser"] > 0


def _one_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and needle in err, err


@pytest.mark.slow
def test_bad_cache_settings_are_one_line(tmp_path, capsys):
    base = ["profile", "--model", "tiny-flux", "--steps", "2", "--out", str(tmp_path / "o")]
    _one_line(capsys, [*base, "--approx", "pab=0"], "whole number of steps >= 1")
    _one_line(capsys, [*base, "--approx", "taylorseer=1.5"], "whole number of steps >= 1")
    _one_line(capsys, [*base, "--approx", "first-block-cache=-1"], ">= 0")
    _one_line(capsys, [*base, "--approx", "first-block-cache=0.1", "--mode", "analytic"], "use --mode measured")
    _one_line(capsys, [*base, "--approx", "block=0.5+first-block-cache=0.1"], "measure it alone")
    _one_line(capsys, [*base, "--approx", "teacache=-0.1"], ">= 0")
    _one_line(capsys, [*base, "--approx", "teacache=0.4", "--mode", "analytic"], "use --mode measured")
    _one_line(capsys, [*base, "--approx", "faster-cache=0"], "whole number of steps >= 1")
    _one_line(capsys, ["profile", "--model", "tiny-pixart", "--steps", "2", "--approx", "teacache=0.4", "--out",
                       str(tmp_path / "t")], "teacache applies to Flux, HunyuanVideo and Wan 2.1 models")
    _one_line(capsys, ["profile", "--model", "tiny-sd3", "--steps", "2", "--approx", "pab=2", "--out",
                       str(tmp_path / "p")], "applies to Flux models")
    _one_line(capsys, ["profile", "--model", "tiny-flux", "--steps", "2", "--approx", "deepcache=2", "--out",
                       str(tmp_path / "q")], "applies to UNet models")


def test_first_block_cache_account_is_the_traced_run(tmp_path):
    r = diffprobe.profile(**KW, approx="first-block-cache=0.3", out=str(tmp_path)).to_dict()["approx"]
    steps = r["steps"]
    full = max(s["flops"] for s in steps)
    # every step runs the first double block; skipped steps run nothing after it
    assert all("transformer_blocks.0" in s["blocks"] for s in steps)
    skipped = [s for s in steps if "single_transformer_blocks.1" not in s["blocks"]]
    assert r["flops_saved_by_stage"]["denoiser"] > 0 and skipped
    assert all(s["flops"] < full for s in skipped)


def test_teacache_steps_cost_what_its_decisions_say(dense, tmp_path):
    # TeaCache (written from its paper): every step pays the indicator (the first block's adaLN norm, once more)
    # and the residual (computed steps: subtract it; skipped: add it); skipped steps run no transformer block
    root, d = dense
    r = diffprobe.profile(**KW, approx="teacache=0.4", out=str(tmp_path)).to_dict()["approx"]
    ops = d.ops
    step0 = ops[(ops["stage"] == "denoiser") & (ops["step"] == 0)]
    full = float(step0["flops"].sum())
    blocks = float(step0.loc[step0["module"].str.contains(r"transformer_blocks\.\d+"), "flops"].sum())
    norm1 = step0["module"].str.fullmatch(r"transformer\.transformer_blocks\.0\.norm1(?:\..*)?")
    indicator = float(step0.loc[norm1, "flops"].sum())  # the image stream's adaLN (not norm1_context)
    residual = 1 * 16 * 32  # one image latent of tiny-flux at 64 px: 16 tokens x 32 channels
    # the relative L1 change (between the first and the last step): a subtract, two abs, two means over the
    # latent and one divide
    change = 5 * residual + 1
    skipped = [s["step"] for s in r["steps"] if "single_transformer_blocks.0" not in s["blocks"]]
    ran = {s["step"]: s["flops"] for s in r["steps"]}
    assert skipped and 0 not in skipped and 7 not in skipped  # the first and last steps always compute
    for step, flops in ran.items():
        extra = indicator + residual + (0 if step in (0, 7) else change)
        want = full - blocks + extra if step in skipped else full + extra
        assert flops == pytest.approx(want, rel=1e-12), step
    saved = len(skipped) * blocks - 8 * (indicator + residual) - 6 * change
    assert r["flops_saved_by_stage"]["denoiser"] == pytest.approx(saved, rel=1e-12)


def test_teacache_threshold_zero_is_dense_bit_for_bit(dense):
    root, _ = dense
    diffprobe.profile(**KW, approx="teacache=0", out=str(root / "tea0"))
    img = np.asarray(Image.open(root / "tea0" / "image_approx.png"))
    assert np.array_equal(img, np.asarray(Image.open(root / "dense" / "image.png")))


def test_pab_on_wan_counts_the_calls_of_both_cfg_branches(tmp_path):
    """Wan runs its transformer twice per step (the prompt's call, then the negative prompt's, each in a cache
    context of its own), but diffusers' PAB hook keeps one counter per layer across both: its rule (reuse at the
    layer's c-th call when c > 0, the timestep is in (100, 800) and c is not a multiple of the skip) runs over calls,
    two per step, and a reused output may be the other branch's. Only self-attention is broadcast (diffusers'
    default). Saved FLOPs against that rule, the scheduler's timesteps and the dense records."""
    from diffprobe.models.registry import build_scheduler

    kw = dict(model="tiny-wan", steps=8, sample_steps=0)
    d = diffprobe.profile(**kw, out=str(tmp_path / "dense"))
    r = diffprobe.profile(**kw, approx="pab=3", out=str(tmp_path / "pab3")).to_dict()["approx"]
    sched = build_scheduler(get_spec("tiny-wan"))
    sched.set_timesteps(8, device="cpu")
    ts = [float(t) for t in sched.timesteps]
    calls = [(i, c, t) for i, t in enumerate(ts) for c in (2 * i, 2 * i + 1)]  # (step, call, timestep)
    skipped = [(i, c) for i, c, t in calls if c > 0 and 100 < t < 800 and c % 3 != 0]
    assert {c % 2 for _, c in skipped} == {0, 1} and len({i for i, _ in skipped}) < len(skipped)
    ops = d.ops
    call0 = ops[(ops["stage"] == "denoiser") & (ops["step"] == 0) & (ops["cfg"] == "cond")]
    per_call = float(call0.loc[call0["module"].str.contains(r"blocks\.\d+\.attn1(?:\.|$)"), "flops"].sum())
    checks = 2 * sum(1 + (t > 100) for _, _, t in calls)  # the window test per self-attention layer and call
    assert r["method_overhead"]["flops"] == checks
    assert r["flops_saved_by_stage"]["denoiser"] == pytest.approx(len(skipped) * per_call - checks, rel=1e-12)


@pytest.mark.parametrize("model", ["tiny-wan", "tiny-hunyuan-video"])
def test_teacache_on_the_video_models_costs_what_its_decisions_say(model, tmp_path):
    """TeaCache with the authors' video recipes: Wan reads the timestep embedding (nothing computed for it) and
    keeps a state per CFG call; HunyuanVideo reads its first block's modulated input (its adaLN once more). Every
    call pays the residual (computed: subtract it; skipped: add it, N tokens x D) and, but at the first and last
    steps, the relative L1 change (5 ops per indicator element + 1); a skipped call runs no block."""
    import pandas as pd

    r = diffprobe.profile(model=model, steps=4, sample_steps=0, approx="teacache=0.4", out=str(tmp_path))
    dense = r.ops[r.ops["stage"] == "denoiser"]
    ran = pd.read_parquet(tmp_path / "ops_approx.parquet")
    ran = ran[ran["stage"] == "denoiser"]
    keys = ["step", "cfg"]
    first = dense[(dense["step"] == 0) & (dense["cfg"] == dense["cfg"].iloc[0])]
    blocks = float(first.loc[first["module"].str.contains(r"^transformer\.(?:single_transformer_|transformer_)?blocks"
                                                          r"\.\d+"), "flops"].sum())
    if model == "tiny-wan":  # 48 tokens x 16 channels; the indicator: the (1, 16) timestep embedding
        residual, indicator, norm1 = 48 * 16, 16, 0.0
    else:  # 48 video tokens x 16; the indicator: the first block's modulated input, (1, 48, 16)
        residual, indicator = 48 * 16, 48 * 16
        norm1 = float(first.loc[first["module"].str.fullmatch(r"transformer\.transformer_blocks\.0\.norm1(?:\..*)?"),
                                "flops"].sum())
    first_block = r"^transformer\.(?:transformer_)?blocks\.0\.(?:attn|ff)"  # (not the token refiner's blocks)
    computed = ran.groupby(keys)["module"].agg(lambda m: m.str.contains(first_block).any())
    assert computed[0].all() and computed[3].all() and not computed.all()
    dense_calls, ran_calls = dense.groupby(keys)["flops"].sum(), ran.groupby(keys)["flops"].sum()
    for key, did in computed.items():
        extra = residual + norm1 + (0 if key[0] in (0, 3) else 5 * indicator + 1)
        want = dense_calls[key] + extra - (0 if did else blocks)
        assert ran_calls[key] == pytest.approx(want, rel=1e-12), key
