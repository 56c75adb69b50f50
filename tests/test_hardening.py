"""Issue 15: each defect found by trying diffprobe as a new user would, one test per item.

Every bad input must give one line on stderr and exit status 2, keep what was measured, and every JSON output must
be standard JSON (no NaN / Infinity)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffprobe
from diffprobe.cli import main
from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import build_components, get_spec, pipeline_from_components
from tests.cli_checks import held_elsewhere
from tests.cli_checks import one_line_error as _one_line_error

TINY = ["--model", "tiny", "--steps", "1", "-q"]


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# -- High ---------------------------------------------------------------------------------------------------------
def test_flop_totals_that_overflow_int64_are_refused_not_wrapped(tmp_path, capsys):
    # sd15 at 50000 px, one step: self-attention alone is ~1e19 FLOPs, past 2^63 - 1 (main printed negative counts)
    _one_line_error(capsys, ["profile", "--model", "sd15", "--mode", "analytic", "--height", "50000", "--width",
                             "50000", "--steps", "1", "--out", str(tmp_path / "o"), "-q"], "64-bit")


def test_counts_stay_exact_at_large_sizes(tmp_path):
    # tiny at 4096 and 8192 px (latent 512² and 1024² tokens): the attention-score FLOPs of one evaluation grow
    # exactly 16x when the side doubles (2·N²·d + N² scale multiplies, N = tokens), as integers
    def score(side):
        r = diffprobe.profile(model="tiny", steps=1, mode="analytic", height=side, width=side,
                              out=str(tmp_path / str(side)))
        ops = r.ops
        sel = (ops["stage"] == "denoiser") & (ops["layer_type"] == "attn_score") & (ops["attn_kind"] == "self")
        return int(ops.loc[sel, "flops"].sum())

    a, b = score(4096), score(8192)
    assert b == 16 * a and a > 0


def test_kernels_bench_refuses_what_memory_cannot_hold(capsys):
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "10000000"], "GiB", "available")
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "256", "--block-size", "100000"], "--block-size 100000")


@pytest.fixture(scope="module")
def weight_folders(tmp_path_factory):
    """tiny saved three ways: safetensors only, pickle (.bin) only, and both (different weights in each)."""
    root = tmp_path_factory.mktemp("weights")
    spec = get_spec("tiny")
    safe = pipeline_from_components(spec, build_components(spec, "random", seed=1))
    other = pipeline_from_components(spec, build_components(spec, "random", seed=2))
    safe.save_pretrained(str(root / "safe"))
    safe.save_pretrained(str(root / "pickle"), safe_serialization=False)
    other.save_pretrained(str(root / "both"), safe_serialization=False)  # .bin files of other values ...
    safe.save_pretrained(str(root / "both"))  # ... beside the safetensors (transformers writes safetensors anyway)
    return root


def _image(folder: Path) -> np.ndarray:
    return np.asarray(Image.open(folder / "image.png"))


@pytest.mark.slow
def test_safetensors_win_over_pickle_with_allow_pickle(weight_folders, tmp_path):
    run = dict(model="tiny", steps=1, sample_steps=0, seed=1)
    diffprobe.profile(weights=str(weight_folders / "safe"), out=str(tmp_path / "safe"), **run)
    diffprobe.profile(weights=str(weight_folders / "both"), allow_pickle=True, out=str(tmp_path / "both"), **run)
    diffprobe.profile(weights=str(weight_folders / "safe"), allow_pickle=True, out=str(tmp_path / "safe_flag"), **run)
    assert np.array_equal(_image(tmp_path / "safe"), _image(tmp_path / "both"))
    assert np.array_equal(_image(tmp_path / "safe"), _image(tmp_path / "safe_flag"))


@pytest.mark.slow
def test_pickle_only_folder_needs_the_flag_and_then_loads(weight_folders, tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--weights", str(weight_folders / "pickle"), "--out",
                             str(tmp_path / "no")], "--allow-pickle")
    r = diffprobe.profile(model="tiny", steps=1, sample_steps=0, seed=1, weights=str(weight_folders / "pickle"),
                          allow_pickle=True, out=str(tmp_path / "yes"))
    diffprobe.profile(model="tiny", steps=1, sample_steps=0, seed=1, weights=str(weight_folders / "safe"),
                      out=str(tmp_path / "safe"))
    assert r.status == "ok" and np.array_equal(_image(tmp_path / "yes"), _image(tmp_path / "safe"))


# -- Medium -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["profile", "approx"])
@pytest.mark.parametrize("side", ["--height", "--width"])
def test_zero_size_is_refused(command, side, tmp_path, capsys):
    _one_line_error(capsys, [command, *TINY, side, "0", "--out", str(tmp_path / "o")], f"{side} must be a positive")


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_model_and_weights_must_match(model, weight_folders, tmp_path, capsys):
    err = _one_line_error(capsys, ["profile", "--model", model, "--steps", "1", "-q", "--weights",
                                   str(weight_folders / "safe"), "--out", str(tmp_path / "o")], model)
    assert "tiny" in err  # the folder's own architecture is named


def test_measured_sweep_with_mismatched_weights_is_refused_before_any_point(weight_folders, tmp_path, capsys):
    _one_line_error(capsys, ["sweep", "--model", "sd15", "--mode", "measured", "--resolutions", "64", "--weights",
                             str(weight_folders / "safe"), "--out", str(tmp_path / "s"), "-q"], "tiny")
    assert not (tmp_path / "s" / "points").exists()


@pytest.mark.parametrize("command", [["sweep", "--resolutions", "64"], ["sparsity"]])
def test_out_that_is_a_file(command, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(capsys, [*command, "--model", "tiny", "--steps", "1", "-q", "--out", str(f)], "is a file")


def test_a_sweep_folder_in_use_is_refused(tmp_path, capsys):
    from diffprobe.run.sweep import SweepFolder

    held = SweepFolder(tmp_path / "s", {})
    held.open()
    try:
        _one_line_error(capsys, ["sweep", *TINY, "--resolutions", "64", "--out", str(tmp_path / "s")], "in use")
    finally:
        held.close()
    assert main(["sweep", *TINY, "--resolutions", "64", "--out", str(tmp_path / "s")]) == 0


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_stuck_lock(tmp_path):
    folder = tmp_path / "s"
    code = ("import sys, time; from diffprobe.run.sweep import SweepFolder; f = SweepFolder(sys.argv[1], {}); "
            "f.open(); print('locked', flush=True); time.sleep(60)")
    with held_elsewhere(code, folder, "locked"):
        with pytest.raises(DiffprobeError, match="in use"):
            from diffprobe.run.sweep import SweepFolder

            SweepFolder(folder, {}).open()
    assert main(["sweep", *TINY, "--resolutions", "64", "--out", str(folder)]) == 0


def _interrupted_sweep(out: Path):
    from diffprobe.run.profile import ProfileConfig
    from diffprobe.run.sweep import SweepConfig, run_sweep

    def stop_after_two(stage, done, total):
        if stage == "points" and done == 2:
            raise KeyboardInterrupt

    sc = SweepConfig(base=ProfileConfig(model="tiny", steps=1, mode="analytic"),
                     resolutions=[(64, 64), (128, 128), (256, 256)], out=str(out))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sc, progress=stop_after_two)


@pytest.mark.slow
def test_an_interrupted_sweep_keeps_its_findings(tmp_path, capsys):
    from diffprobe.report.html import build_report
    from diffprobe.run.compare import compare_runs

    _interrupted_sweep(tmp_path / "a")
    _interrupted_sweep(tmp_path / "b")
    state = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert [p["name"] for p in state["findings"]["points"]] == ["64x64-b1", "128x128-b1"]
    assert state["complete"] is False
    # a sweep killed before it could write findings (SIGKILL): the readers use the points on disk
    del state["findings"]
    (tmp_path / "b" / "sweep.json").write_text(json.dumps(state))
    html = build_report(tmp_path / "b").read_text()
    assert "2 points" in html and "did not finish" in html
    d = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "c")
    # per-point metrics for both points found, and the sweep-wide crossover where there is one
    assert {k.split(".")[0] for k in d["metrics"]} - {"attention_overtakes_px"} == {"64x64-b1", "128x128-b1"}


@pytest.mark.slow
def test_profile_out_must_be_new_or_empty_unless_force(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["profile", *TINY, "--batch", "2", "--out", str(out)]) == 0
    assert (out / "image_1.png").exists()
    _one_line_error(capsys, ["profile", *TINY, "--out", str(out)], "not empty", "--force")
    assert main(["profile", *TINY, "--out", str(out), "--force"]) == 0
    assert not (out / "image_1.png").exists() and (out / "image.png").exists()  # nothing stale is left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    _one_line_error(capsys, ["profile", *TINY, "--out", str(other), "--force"], "did not write")
    assert (other / "notes.txt").read_text() == "keep me"
    _one_line_error(capsys, ["profile", *TINY, "--out", ""], "--out is empty")


def _two_runs(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["profile", *TINY, "--mode", "analytic", "--out", str(out)]) == 0
    return a, b


@pytest.mark.slow
def test_compare_refuses_an_out_that_is_an_input(tmp_path, capsys):
    a, b = _two_runs(tmp_path)
    _one_line_error(capsys, ["compare", str(a), str(b), "--out", str(b)], "one of the runs")
    assert json.loads((b / "run.json").read_text())["kind"] == "profile"


@pytest.mark.slow
def test_compare_marks_a_failed_run(tmp_path, capsys):
    a, b = _two_runs(tmp_path)
    run = json.loads((b / "run.json").read_text())
    run.update(status="failed", error="out of memory in stage unet")  # as a run that died writes it
    (b / "run.json").write_text(json.dumps(run))
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--format", "json"]) == 0
    d = _strict_json(capsys.readouterr().out)
    assert [r["status"] for r in d["runs"]] == ["ok", "failed"]
    assert len(d["warnings"]) == 1 and "out of memory" in d["warnings"][0]
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c2")]) == 0
    assert "(failed)" in capsys.readouterr().out
    assert "did not finish" in (tmp_path / "c2" / "report.html").read_text()


def test_profile_approx_is_in_the_report(tmp_path):
    out = tmp_path / "p"
    assert main(["profile", *TINY, "--approx", "topk=4", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "FLOPs, topk=4" in html and "image_approx.png" in html and "of denoiser attention FLOPs saved" in html


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_seed_out_of_range(seed, tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--seed", seed, "--out", str(tmp_path / "o")], "--seed")


def test_analytic_scheduler_steps_run_on_meta(tmp_path, monkeypatch):
    import diffusers

    seen = []
    original = diffusers.DDIMScheduler.step

    def spy(self, model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.device.type, sample.device.type))
        return original(self, model_output, timestep, sample, *args, **kwargs)

    monkeypatch.setattr(diffusers.DDIMScheduler, "step", spy)
    diffprobe.profile(model="tiny", steps=3, mode="analytic", out=str(tmp_path / "a"))
    assert seen == [("meta", "meta")] * 3  # nothing the size of the latent is allocated on the CPU


@pytest.mark.parametrize("name", sorted({get_spec(m).config("scheduler")["_class_name"] for m in
                                         ("sd15", "sd21", "sdxl", "tiny", "digits")}))
def test_scheduler_step_traces_the_same_ops_on_meta_as_on_cpu(name):
    # the analytic account runs the step on meta: its ops and shapes must be those of a real CPU step
    import diffusers
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.ops.append((str(func), shapes))
            return out

    def trace(device):
        sched = getattr(diffusers, name)()
        sched.set_timesteps(4, device="cpu")
        x = torch.zeros(1, 4, 8, 8, device=device)
        mode = Ops()
        for t in sched.timesteps[:3]:
            with mode:
                x = sched.step(torch.zeros(1, 4, 8, 8, device=device), t, x, return_dict=False)[0]
        return mode.ops

    assert trace("meta") == trace("cpu")


# -- Low ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-3", "nan", "inf"])
def test_guidance_must_be_finite_and_non_negative(value, tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--guidance", value, "--out", str(tmp_path / "o")], "--guidance")


@pytest.mark.slow
def test_approx_json_is_standard(tmp_path, capsys):
    assert main(["approx", *TINY, "--method", "threshold", "--eps", "0", "--out", str(tmp_path / "a"),
                 "--format", "json"]) == 0
    d = _strict_json(capsys.readouterr().out)
    _strict_json((tmp_path / "a" / "approx.json").read_text())
    noop = d["results"][1]
    assert noop["psnr"] is None and noop["identical"] is True


@pytest.mark.slow
def test_a_long_prompt_is_cut_with_one_warning(tmp_path, capsys):
    prompt = " ".join(["a red horse"] * 40)  # 120 words: more than CLIP's 77 tokens
    assert main(["profile", *TINY, "--prompt", prompt, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.count("diffprobe: warning:") == 1 and err.count("\n") == 1 and "cut" in err
    assert "no FLOP formula" not in err


@pytest.mark.parametrize("group, word", [("hardware", "measure"), ("kernels", "bench")])
def test_a_bare_group_prints_its_own_help(group, word, capsys):
    assert main([group]) == 0
    out = capsys.readouterr().out
    assert f"diffprobe {group}" in out and word in out and "profile" not in out


@pytest.mark.slow
def test_weight_loading_is_quiet(weight_folders, tmp_path, capfd):
    assert main(["profile", *TINY, "--weights", str(weight_folders / "safe"), "--out", str(tmp_path / "o")]) == 0
    err = capfd.readouterr().err
    assert "Loading pipeline components" not in err and "FutureWarning" not in err and "deprecated" not in err


def test_weight_errors_are_one_line(weight_folders, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(weight_folders / "safe", broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    _one_line_error(capsys, ["profile", *TINY, "--weights", str(broken), "--out", str(tmp_path / "o")],
                    "could not load weights")


def test_folder_without_unet_names_it(weight_folders, tmp_path, capsys):
    import shutil

    folder = tmp_path / "nounet"
    shutil.copytree(weight_folders / "safe", folder)
    shutil.rmtree(folder / "unet")
    _one_line_error(capsys, ["profile", *TINY, "--weights", str(folder), "--out", str(tmp_path / "o")], "unet/")


def test_hub_cache_root_resolves_to_its_snapshot(weight_folders, tmp_path):
    import shutil

    root = tmp_path / "models--org--tiny"
    shutil.copytree(weight_folders / "safe", root / "snapshots" / "abc123")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("abc123")
    r = diffprobe.profile(model="tiny", steps=1, weights=str(root), out=str(tmp_path / "o"))
    assert r.config.weights.endswith("snapshots/abc123")


@pytest.mark.slow
def test_misleading_messages(tmp_path, capsys):
    _one_line_error(capsys, ["sweep", *TINY, "--resolutions", "8", "--out", str(tmp_path / "s")], "resolution 8x8")
    f = tmp_path / "file.json"
    f.write_text("{}")
    _one_line_error(capsys, ["report", str(f)], "is a file")
    # a block side past every matrix is one block per matrix (not an out-of-memory error blaming the image size)
    assert main(["sparsity", *TINY, "--blocks", "100000", "--tau", "0.9", "--eps", "1e-3", "--out",
                 str(tmp_path / "sp"), "--format", "json"]) == 0
    by_kind = _strict_json(capsys.readouterr().out)["summary"]["64x64"]["by_kind"]
    for m in by_kind.values():
        assert m["blocks_100000_0.9"] == 1.0 and m["empty_blocks_100000_0.001"] == 0.0


def test_sweep_point_run_dir_is_its_final_folder(tmp_path):
    assert main(["sweep", *TINY, "--resolutions", "64", "--out", str(tmp_path / "s")]) == 0
    run = json.loads((tmp_path / "s" / "points" / "64x64-b1" / "run.json").read_text())
    assert run["run_dir"] == str(tmp_path / "s" / "points" / "64x64-b1")


def test_default_run_folders_never_collide(tmp_path, monkeypatch):
    from diffprobe.records.runfolder import prepare_out_dir

    monkeypatch.chdir(tmp_path)
    made = {prepare_out_dir(None, "tiny") for _ in range(3)}  # within one second
    assert len(made) == 3 and all(p.is_dir() for p in made)


def test_ctrl_c_during_profile_keeps_an_interrupted_run_json(tmp_path):
    def interrupt(stage, done, total):
        if stage == "denoise":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffprobe.profile(model="tiny", steps=3, sample_steps=0, out=str(tmp_path / "o"), progress=interrupt)
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["status"] == "interrupted" and "Ctrl-C" in run["error"] and run["stages"].get("text_encoder")


def test_check_heads_must_not_be_negative(capsys):
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "256", "--check-heads", "-1"], "--check-heads")


# -- cosmetic -----------------------------------------------------------------------------------------------------
def test_number_formats():
    from diffprobe.report.units import fmt_bytes, fmt_k, fmt_n, si_scale

    assert fmt_n(6.49064e18) == "6.49 E" and fmt_n(1234) == "1.23 k"
    assert fmt_k(-0.001) == "0.00" and fmt_k(-1.234) == "-1.23"
    assert si_scale(3.0e8, "FLOP") == (1e6, "MFLOP") and si_scale(5.0, "FLOP") == (1.0, "FLOP")
    assert fmt_bytes(512) == "512 B" and fmt_bytes(3 * 2**30) == "3.00 GiB"


@pytest.mark.slow
def test_profile_table_cosmetics(tmp_path, capsys):
    assert main(["profile", *TINY, "--hardware", "H100-SXM", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "tiny (tiny" not in out
    assert "roofline on H100-SXM" in out and "measured on a cpu against the gpu preset" in out
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["environment"]["cuda"] is not None
    assert "measured on a cpu" in (tmp_path / "o" / "report.html").read_text().lower()


def test_one_point_sweep_has_no_empty_exponent_table(tmp_path, capsys):
    assert main(["sweep", *TINY, "--resolutions", "64", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "scaling exponents k" not in out and "need at least two resolutions" in out


@pytest.mark.slow
def test_sweep_comparison_shows_the_swept_sizes(tmp_path, capsys):
    for name in ("a", "b"):
        assert main(["sweep", *TINY, "--resolutions", "64,128", "--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c"),
                 "--format", "json"]) == 0
    runs = _strict_json(capsys.readouterr().out)["runs"]
    assert runs[0]["height"] == "64,128" and runs[0]["batch"] == "1"
    assert "<td>None</td>" not in (tmp_path / "c" / "report.html").read_text()


def test_sparsity_report_has_a_table(tmp_path):
    assert main(["sparsity", *TINY, "--out", str(tmp_path / "sp")]) == 0
    html = (tmp_path / "sp" / "report.html").read_text()
    assert "Mean statistics" in html and "<th>entropy</th>" in html


def test_flop_axes_are_scaled_to_the_values():
    from diffprobe.report.figures import stage_layer_bars

    fig = stage_layer_bars({"flops": {"by_stage_layer_type": {"denoiser": {"conv": 3.0e8}}}})
    assert fig.axes[0].get_ylabel() == "MFLOP"


# -- interface ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("command", [["sweep", "--resolutions", "64"], ["sparsity"], ["approx", "--eps", "0"]])
def test_every_command_has_a_default_out(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--model", "tiny", "--steps", "1", "-q"]) == 0
    made = list((tmp_path / "runs").iterdir())
    assert len(made) == 1 and (made[0] / "report.html").exists()


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"diffprobe {diffprobe.__version__}"
    assert main(["profile", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "astronaut riding a horse" in text and "cuda:N" in text


def test_device_is_checked_in_analytic_mode_too(tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--mode", "analytic", "--device", "gpu0", "--out",
                             str(tmp_path / "o")], "unknown device")


def test_digits_guidance_is_the_same_everywhere(tmp_path):
    from diffprobe.run.profile import ProfileConfig

    assert ProfileConfig(model="digits").resolved().guidance == 4.0
    assert ProfileConfig(model="sd15").resolved().guidance == 7.5


def test_sparsity_help_explains_its_step_default(capsys):
    assert main(["sparsity", "--help"]) == 0
    assert "profile samples 3" in " ".join(capsys.readouterr().out.split())
