"""Issue 24 (third hardening round): each defect found by trying diffprobe as a new user would, a test per item.

Every test here failed on main before its fix (each was run there once); bad inputs give one line on stderr and exit
status 2, and nothing measured is lost."""

import json

import pytest

import diffprobe
from diffprobe.cli import main
from tests.cli_checks import one_line_error as _one_line_error


def _json(capsys, argv) -> dict:
    assert main(argv + ["--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- 1. sampled steps stop the loop on every pipeline ------------------------------------------------------------
def test_pixart_stops_after_the_sampled_steps(tmp_path):
    # PixArt's pipeline has no callback_on_step_end: main ran all 6 steps under "measured 2 of 6"
    r = diffprobe.profile(model="tiny-pixart", steps=6, sample_steps=2, out=str(tmp_path))
    d = r.to_dict()
    assert len(d["step_times"]) == 2 and d["unet_evals_measured"] == 2
    den = r.ops[r.ops["stage"] == "denoiser"]
    assert sorted(den["step"].unique()) == [0, 1]
    measured = sum(s["unet_s"] for s in d["step_times"])
    assert d["projection"]["stages"]["denoiser"] > measured  # 6 evaluations projected above the 2 measured


# -- 4. step counts the scheduler or pipeline cannot take ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["analytic", "measured"])
def test_more_steps_than_the_scheduler_takes(mode, tmp_path, capsys):
    out = tmp_path / "o"
    _one_line_error(capsys, ["profile", "--model", "tiny", "--steps", "1001", "--mode", mode, "--out", str(out),
                             "-q"], "--steps 1001", "1000")
    assert not out.exists()  # refused before the folder is made


@pytest.mark.parametrize("model", ["pixart-alpha", "pixart-sigma"])
def test_pixart_one_step_is_refused(model, tmp_path, capsys):
    _one_line_error(capsys, ["profile", "--model", model, "--mode", "analytic", "--steps", "1", "--out",
                             str(tmp_path / "o"), "-q"], "--steps 1", "--steps 2")


# -- 3, 8. compare of sparsity and approx runs -----------------------------------------------------------------------
@pytest.mark.slow
def test_compare_two_sparsity_runs(tmp_path, capsys):
    for name, prompt in (("a", "a red cube"), ("b", "a blue ball")):
        assert main(["sparsity", "--model", "tiny", "--steps", "1", "--prompt", prompt, "--out", str(tmp_path / name),
                     "-q", "--format", "json"]) == 0
    capsys.readouterr()
    d = _json(capsys, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")])
    assert d["of"] == "sparsity" and d["differs"] == ["prompt"]
    own = json.loads((tmp_path / "b" / "sparsity.json").read_text())["summary"]["64x64"]["by_kind"]["self"]
    assert d["metrics"]["64x64.self.entropy"]["b"] == pytest.approx(own["entropy"])
    assert (tmp_path / "c" / "report.html").is_file()


@pytest.mark.slow
def test_compare_two_approx_runs(tmp_path, capsys):
    for name, eps in (("a", "1e-2"), ("b", "1e-1")):
        assert main(["approx", "--model", "digits", "--steps", "2", "--per-digit", "1", "--eps", eps, "--out",
                     str(tmp_path / name), "-q", "--format", "json", "--no-save-masks"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    d = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert d["of"] == "approx" and "dense.unet_s" in d["metrics"]  # the settings they share: dense
    rows = {r.get("setting") or r["method"]: r for r in
            json.loads((tmp_path / "a" / "approx.json").read_text())["results"]}
    assert d["metrics"]["threshold=0.01.attention_flops_saved"]["a"] == rows["threshold=0.01"]["attention_flops_saved"]
    assert d["metrics"]["threshold=0.1.psnr"]["a"] is None  # a's settings beside b's, each where it ran
    assert "threshold=0.01.attention_flops_saved" in text


def test_compare_of_different_kinds_names_them_with_their_article(tmp_path, capsys):
    assert main(["profile", "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "p"), "-q",
                 "--format", "json"]) == 0
    capsys.readouterr()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "approx.json").write_text(json.dumps({"schema_version": diffprobe.records.schema.VERSIONS[
        "approx"], "kind": "approx", "results": []}))
    _one_line_error(capsys, ["compare", str(tmp_path / "p"), str(tmp_path / "x")], "is an approx")


# -- 21. comma lists, empty --out, wording ---------------------------------------------------------------------------
@pytest.mark.parametrize("value, needle", [("64,,128", "empty item"), ("64,64", "twice"), ("64,64x64", "twice")])
def test_resolution_lists_refuse_empty_and_repeated_items(value, needle, tmp_path, capsys):
    _one_line_error(capsys, ["sweep", "--model", "tiny", "--resolutions", value, "--out", str(tmp_path / "o")],
                    needle)


@pytest.mark.parametrize("command", [["sweep", "--model", "tiny", "--resolutions", "64"], ["sparsity"]])
def test_empty_out_is_named_as_empty(command, capsys):
    _one_line_error(capsys, command + ["--out", ""], "--out is empty")


def test_bytes_format_keeps_its_unit():
    from diffprobe.report.units import fmt_n

    assert fmt_n(0, "B") == "0 B" and fmt_n(3280, "B") == "3.28 kB" and fmt_n(12) == "12"


# -- 2. reuse savings over the whole schedule, whatever --sample-steps ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model, setting", [("tiny", "deepcache=2"), ("tiny-flux", "taylorseer=2")])
def test_reuse_savings_cover_every_step_under_sampling(model, setting, tmp_path):
    sampled = diffprobe.profile(model=model, steps=8, approx=setting, out=str(tmp_path / "s")).approx  # 3 sampled
    full = diffprobe.profile(model=model, steps=8, sample_steps=0, approx=setting, out=str(tmp_path / "f")).approx
    assert sampled["unet_evals_accounted"] == 8
    # replayed on meta (sampled) and measured at every step (full): the same account, but for the few records that
    # exist only where the data does (docs/counting.md)
    for key in ("end_to_end_flops_saved", "attention_flops_saved"):
        assert sampled[key] == pytest.approx(full[key], rel=1e-6)
    assert sampled["attention_flops_saved"] > 0.3  # main: 0.0% for taylorseer, 1 cached step of 3 for deepcache
    # the method's plan: every second step reuses (computes in part only), 4 of 8 for DeepCache; TaylorSeer
    # forecasts 3 (its first steps always compute)
    reused = [s["step"] for s in sampled["steps"] if s["partial"]]
    assert reused == ([1, 3, 5, 7] if setting.startswith("deepcache") else [3, 5, 7])


# -- 5. savings net of the method's own cost ------------------------------------------------------------------------
def test_savings_by_stage_are_net_of_the_predictor(tmp_path):
    r = diffprobe.profile(model="digits", steps=2, sample_steps=0, approx="predicted=0.001", out=str(tmp_path))
    ap = r.approx
    predictor = ap["flops_by_layer_type"]["attn_predictor"]
    assert predictor > 0
    dense_total = float(r.ops["flops"].sum())
    # the per-stage savings add up to the end-to-end figure printed beside them
    assert sum(ap["flops_saved_by_stage"].values()) == pytest.approx(dense_total - ap["flops_total"], rel=1e-12)
    assert sum(ap["flops_saved_by_stage"].values()) == pytest.approx(ap["end_to_end_flops_saved"] * dense_total)
    assert sum(ap["flops_by_stage"].values()) == pytest.approx(ap["flops_total"])


# -- 6. one folder, one run ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_folder_another_run_holds_is_refused(tmp_path, capsys):
    from tests.cli_checks import held_elsewhere

    out = tmp_path / "o"
    code = ("import sys, time; from diffprobe.records.runfolder import prepare_out_dir; "
            "prepare_out_dir(sys.argv[1], 'tiny'); print('claimed', flush=True); time.sleep(60)")
    with held_elsewhere(code, out, "claimed"):
        _one_line_error(capsys, ["profile", "--model", "tiny", "--steps", "1", "--out", str(out), "-q"], "in use")
        _one_line_error(capsys, ["sweep", "--model", "tiny", "--steps", "1", "--resolutions", "64", "--out",
                                 str(out), "-q"], "in use")
    assert main(["profile", "--model", "tiny", "--steps", "1", "--out", str(out), "-q", "--format", "json"]) == 0


# -- 7. extrapolated crossovers stay within reason --------------------------------------------------------------
def test_a_crossover_far_beyond_the_sweep_is_not_given():
    from diffprobe.analyses.scaling import crossover

    # a grows as side^2.0001, b as side^2 and 100x larger: the power laws cross near 100^(1/1e-4) px
    far = crossover([64, 128], [1.0, 4.0 * 2**0.0001], [100.0, 400.0])
    assert far["side"] is None and "beyond" in far["why"] and far["beyond"] == 8 * 128
    near = crossover([64, 128], [1.0, 8.0], [10.0, 40.0])  # a ~ side^3, b ~ side^2: cross at 64 * 10 = 640 px
    assert near["extrapolated"] and near["side"] == pytest.approx(640)


# -- 9. a sweep with no point done fails --------------------------------------------------------------------------
def test_a_sweep_whose_every_point_fails_exits_non_zero(tmp_path, capsys):
    rc = main(["sweep", "--model", "tiny", "--steps", "1", "--resolutions", "100000", "--out", str(tmp_path / "s"),
               "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "no point of the sweep succeeded" in err and "Traceback" not in err


# -- 10. SIGTERM is Ctrl-C ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_keeps_what_was_measured(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "diffprobe", "profile", "--model", "tiny", "--steps", "500",
                             "--sample-steps", "0", "--out", str(out), "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() and time.monotonic() < deadline:  # the folder is claimed: work has begun
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err == "diffprobe: interrupted (SIGTERM)\n"
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and "SIGTERM" in run["error"]


@pytest.mark.slow
def test_an_interrupted_sweep_says_so(tmp_path, capsys):
    from diffprobe.errors import Terminated
    from diffprobe.run.profile import ProfileConfig
    from diffprobe.run.sweep import SweepConfig, run_sweep

    def stop(stage, done, total):
        if stage == "points" and done == 1:
            raise Terminated()

    for name in ("a", "b"):
        sc = SweepConfig(base=ProfileConfig(model="tiny", steps=1, mode="analytic"),
                         resolutions=[(64, 64), (128, 128)], out=str(tmp_path / name))
        with pytest.raises(KeyboardInterrupt):
            run_sweep(sc, progress=stop)
    state = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert state["status"] == "interrupted" and "SIGTERM" in state["error"]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    assert "did not finish (status interrupted" in capsys.readouterr().out


# -- 11. an interrupted run records what it measured ------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_records_the_steps_measured_and_readers_flag_it(tmp_path, capsys):
    from diffprobe.run.accel import accel_run

    def interrupt(stage, done, total):
        if stage == "denoise" and done == 2:
            raise KeyboardInterrupt

    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        diffprobe.profile(model="tiny", steps=5, sample_steps=0, out=str(out), progress=interrupt)
    run = json.loads((out / "run.json").read_text())
    assert run["unet_evals_measured"] == 2 and run["unet_evals"] == 5 and run["image_complete"] is False
    acc = accel_run(out, "sa-dense")
    assert any("did not finish" in w and "2 of 5" in w for w in acc["warnings"])
    assert main(["accel", str(out)]) == 0
    assert "did not finish" in capsys.readouterr().err


# -- 12. composites apart ------------------------------------------------------------------------------------------
def _row(method, value, setting, saved, ssim=0.95, **kw):
    return {"method": method, "param": "tau", "value": value, "setting": setting, "attention_flops_saved": saved,
            "end_to_end_flops_saved": saved / 4, "kept_fraction": 1 - saved, "unet_s": 1.0, "psnr": 30.0,
            "ssim": ssim, "accuracy": None, "mask_interval": 1 if method == "block" else None, **kw}


def test_a_composite_setting_is_its_own_series():
    from diffprobe.report.findings import approx_findings
    from diffprobe.report.units import setting_series

    rows = [_row("dense", None, None, 0.0, ssim=1.0), _row("block", 0.8, "block=0.8", 0.179),
            _row("block", 0.8, "block=0.8+deepcache=2", 0.46)]
    found = approx_findings({"results": rows})
    assert any(f.startswith("block: up to 17.9%") for f in found), found
    assert any(f.startswith("block+deepcache: up to 46.0%") for f in found), found
    assert [setting_series(r) for r in rows[1:]] == ["block", "block+deepcache"]


# -- 13. the report's seconds are the untraced ones, as in the terminal ----------------------------------------------
def test_report_compares_untraced_seconds_with_untraced_dense():
    from diffprobe.report.html import _approx_sentence

    ap = {"method": "block", "value": 0.5, "setting": "block=0.5+taylorseer=2", "attention_flops_saved": 0.4,
          "end_to_end_flops_saved": 0.1, "kept_fraction": 0.6, "unet_seconds": 1.15, "dense_unet_seconds": 1.66,
          "dense_untraced_unet_seconds": 1.64, "kernel": "cpp"}
    text = _approx_sentence(ap)
    assert "1.64 s" in text and "1.66 s" not in text and "1.15 s" in text


# -- 14. methods that would change nothing ------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["approx", "--method", "threshold,topk"], ["profile", "--approx", "topk=4"]])
def test_attention_methods_on_sana_are_refused(command, tmp_path, capsys):
    _one_line_error(capsys, command + ["--model", "tiny-sana", "--steps", "2", "--out", str(tmp_path / "o"), "-q"],
                    "linear attention", "change nothing")


def test_masked_calls_left_dense_are_named(tmp_path):
    r = diffprobe.profile(model="tiny-pixart", steps=2, sample_steps=0, approx="topk=4", out=str(tmp_path))
    assert "key-padding mask" in r.approx["note"]


# -- 15. masked keys are not sparsity ------------------------------------------------------------------------------
def test_sparsity_leaves_masked_keys_out():
    import torch

    from diffprobe.attention.core import CallInfo
    from diffprobe.attention.probe import SparsityConfig, SparsityProbe

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, 4, 8, generator=g) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 16)
    k, v = torch.randn(2, 1, 16, 8, generator=g), torch.randn(2, 1, 16, 8, generator=g)
    mask[0, ..., 1:] = -10000.0  # the unconditional branch: one real key
    mask[1, ..., 5:] = -10000.0  # the prompt: five
    probe = SparsityProbe(SparsityConfig(eps=(1e-3,), taus=(0.9,), blocks=(4,)))
    call = CallInfo(name="layer", kind="cross", level="block.0", step=0, heads=1, q_tokens=4, k_tokens=16)
    probe.core(q, k, v, mask, call)
    rows = {r["k_tokens"]: r for r in probe.rows}
    assert set(rows) == {1, 5} and rows[5]["keys_masked"] == 11
    # independent: the five-key branch's probabilities in float64, no mask
    p = torch.softmax(q[1].double() @ k[1, :, :5].double().transpose(-1, -2) / 8 ** 0.5, dim=-1)
    assert rows[5]["below_0.001"] == pytest.approx(float((p < 1e-3).double().mean()))
    assert rows[1]["below_0.001"] == 0.0  # main counted its 15 masked keys: 15/16 below every eps


# -- 16. sparsity does not offer an analytic mode it lacks ------------------------------------------------------------
@pytest.mark.parametrize("command", ["sparsity", "approx"])
def test_memory_refusal_offers_only_what_the_command_has(command, capsys, monkeypatch):
    import diffprobe.hardware.environment as env

    monkeypatch.setattr(env, "meminfo_bytes", lambda key: 2**20)  # 1 MiB available
    err = _one_line_error(capsys, [command, "--model", "tiny"], "available")
    assert "--mode analytic" not in err


# -- 17, 19. kernels bench: estimated before it starts, speedups above the limit explained -----------------------------
def test_kernels_bench_refuses_what_would_take_too_long(capsys):
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "200000", "--heads", "8"], "would take about",
                    "--max-seconds")


def test_a_speedup_above_the_limit_is_explained(capsys):
    from diffprobe.report.text import bench_lines

    r = {"tokens": 4096, "heads": 8, "head_dim": 40, "batch": 1, "dtype": "float16", "device": "cpu",
         "device_name": "x", "block_size": 64, "kept_density": 0.25, "dense_backend": "default", "dense_s": 5.69,
         "backend": "cpp", "sparse_s": 1.0, "first_call_s": 0.1, "kernel_s": 1.0, "speedup": 5.69,
         "kernel_speedup": 5.69, "limit": 4.0, "above_limit_note": "the speedup exceeds 1/density"}
    assert any(line.startswith("note: the speedup exceeds") for line in bench_lines(r))


# -- 18. repeated timings with their spread --------------------------------------------------------------------------
@pytest.mark.slow
def test_approx_repeat_reports_the_median_and_spread(tmp_path, capsys):
    d = _json(capsys, ["approx", "--model", "digits", "--steps", "2", "--per-digit", "1", "--eps", "1e-2",
                       "--repeat", "3", "--out", str(tmp_path / "a"), "-q", "--no-save-masks"])
    for row in d["results"]:
        assert row["runs"] == 3 and row["unet_s_min"] <= row["unet_s"] <= row["unet_s_max"]
    assert d["repeat"] == 3


# -- 20. options a mode cannot honour ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["profile", "--mode", "analytic", "--approx", "teacache=0.3"], "Flux"),
    (["profile", "--mode", "analytic", "--device", "cuda"], "no CUDA GPU"),
    (["profile", "--mode", "analytic", "--op-timer", "profiler"], "times nothing"),
    (["profile", "--mode", "analytic", "--repeat", "3"], "times nothing"),
    (["profile", "--mask-interval", "3"], "block=TAU"),
    (["accel", "gemm", "--m", "8", "--k", "8", "--n", "8", "--arch", "sa-block64"], "run folder"),
    (["accel", "gemm", "--m", "8", "--k", "8", "--n", "8", "--density", "0.5"], "run folder"),
])
def test_options_that_would_be_ignored_are_refused(argv, needle, tmp_path, capsys):
    extra = ["--model", "tiny", "--out", str(tmp_path / "o"), "-q"] if argv[0] == "profile" else []
    _one_line_error(capsys, argv + extra, needle)


def test_accel_of_a_run_refuses_gemm_options(tmp_path, capsys):
    assert main(["profile", "--model", "tiny", "--steps", "1", "--mode", "analytic", "--out", str(tmp_path / "p"),
                 "-q", "--format", "json"]) == 0
    capsys.readouterr()
    _one_line_error(capsys, ["accel", str(tmp_path / "p"), "--rows", "64"], "--rows", "accel gemm")


def test_weights_folder_without_a_pipeline_class(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model_index.json").write_text("{}")
    err = _one_line_error(capsys, ["profile", "--model", "tiny", "--weights", str(tmp_path / "w"), "--out",
                                   str(tmp_path / "o"), "-q"], "names no pipeline class")
    assert "None" not in err


# -- 22. quiet means quiet -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_profiler_timer_is_quiet_with_q(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "diffprobe", "profile", "--model", "tiny", "--steps", "1",
                           "--op-timer", "profiler", "-q", "--out", str(tmp_path / "o")], capture_output=True,
                          text=True, timeout=300, env={k: v for k, v in __import__("os").environ.items()
                                                       if k != "KINETO_LOG_LEVEL"})
    assert proc.returncode == 0 and "profiler_start" not in proc.stderr, proc.stderr


# -- 23. step lines summarised ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_reuse_steps_are_summarised_by_kind(tmp_path, capsys):
    assert main(["profile", "--model", "tiny", "--steps", "12", "--mode", "analytic", "--approx", "deepcache=2",
                 "--out", str(tmp_path / "o"), "-q"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  step")]
    assert len(lines) == 2, lines  # main printed one line per step (13 for DeepCache's 12 steps and PNDM's)
    assert any("(forecast or cached): up_blocks.3" in ln and "every 2nd" in ln for ln in lines)


# -- 24. every tokenizer's cut is named ---------------------------------------------------------------------------
def test_a_t5_cut_is_named(tmp_path, capsys):
    prompt = " ".join(["astronaut"] * 20)  # 20 words: past tiny-flux's 16 T5 tokens, within CLIP's 77
    assert main(["profile", "--model", "tiny-flux", "--mode", "analytic", "--steps", "1", "--prompt", prompt,
                 "--out", str(tmp_path / "o"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "tokenizer_2 (T5); its text encoder takes 16" in err, err


# -- 25. reports as a reader sees them ----------------------------------------------------------------------------
def test_equal_costs_sort_in_block_order():
    import pandas as pd

    from diffprobe.analyses.scaling import bottlenecks

    ops = pd.DataFrame({"stage": "denoiser", "level": [f"block.{i}" for i in (10, 2, 1, 11)], "tokens": 16,
                        "layer_type": "ffn", "module": "m", "attn_kind": "", "flops": 100})
    assert [b["level"] for b in bottlenecks(ops)] == ["block.1", "block.2", "block.10", "block.11"]


def test_analytic_report_does_not_claim_timings(tmp_path):
    from diffprobe.report.html import build_report

    diffprobe.profile(model="tiny", steps=1, mode="analytic", out=str(tmp_path))
    html = build_report(tmp_path).read_text()
    assert "timings and FLOPs are real" not in html and "nothing was timed" in html


def test_a_reused_mask_is_named_once():
    from diffprobe.report.text import approx_rows

    rows = [_row("dense", None, None, 0.0, ssim=1.0, kernel="dense", identical=True),
            _row("block", 0.8, "block=0.8+deepcache=2 mask every 3", 0.4, kernel="cpp", mask_interval=3)]
    rows[0]["psnr"] = None
    _, table = approx_rows({"results": rows, "model": "tiny"})
    assert table[1][1].count("mask every 3") == 1, table[1]


@pytest.mark.slow
def test_sampled_reuse_replay_ignores_options_of_the_measured_run(tmp_path):
    # the meta replay of a sampled reuse run inherits nothing that analytic mode refuses (--op-timer, --mask-interval)
    r = diffprobe.profile(model="tiny", steps=4, approx="block=0.5+deepcache=2", mask_interval=2,
                          op_timer="profiler", out=str(tmp_path))
    assert r.approx["unet_evals_accounted"] == 4 and r.approx["mask_interval"] == 2


def test_an_interrupted_approx_pass_keeps_the_dense_run(tmp_path):
    def interrupt(stage, done, total):
        if stage == "approx":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffprobe.profile(model="tiny", steps=2, approx="deepcache=2", out=str(tmp_path), progress=interrupt)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "interrupted" and "--approx pass; the dense run is complete" in run["error"]
    assert run["flops"]["total"] > 0 and run["stages"]["denoiser"] > 0  # the dense run, measured, is kept


def test_dit_and_unet_sweeps_name_their_denoiser_in_both_renderers(tmp_path, capsys):
    from diffprobe.report.findings import profile_findings

    for model in ("tiny-sd3", "tiny"):
        assert main(["sweep", "--model", model, "--steps", "1", "--resolutions", "64,128", "--out",
                     str(tmp_path / model), "-q"]) == 0
        terminal = capsys.readouterr().out
        html = (tmp_path / model / "report.html").read_text()
        if model == "tiny-sd3":  # joint attention shown, no conv column, no "UNet" anywhere
            assert "joint-attn" in terminal and "joint attention" in html
            assert "UNet" not in terminal and "UNet" not in html and ">conv<" not in html
        else:
            assert "self-attn" in terminal and ">convolution<" in html
    r = diffprobe.profile(model="tiny-sd3", steps=1, mode="analytic", out=str(tmp_path / "p"))
    found = profile_findings(r.to_dict(), r.ops)
    assert any(f.startswith("denoiser FLOPs by layer class") for f in found) and not any("UNet" in f for f in found)
