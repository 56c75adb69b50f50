"""A setting against its dense run: reuse savings over every step, net of the predictor, the untraced seconds, repeats,
an interrupted pass."""

import json

import pytest

import diffprobe
from diffprobe.cli import main


def _json(capsys, argv) -> dict:
    assert main(argv + ["--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- 12. composites apart ------------------------------------------------------------------------------------------


# -- 2. reuse savings over the whole schedule, whatever --sample-steps ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model, setting", [("tiny", "deepcache=2"), ("tiny-flux", "taylorseer=2")])
def test_reuse_savings_cover_every_step_under_sampling(model, setting, tmp_path):
    sampled = diffprobe.profile(model=model, steps=8, approx=setting, out=str(tmp_path / "s")).approx  # 3 sampled
    full = diffprobe.profile(model=model, steps=8, sample_steps=0, approx=setting, out=str(tmp_path / "f")).approx
    assert sampled["denoiser_evals_accounted"] == 8
    # replayed on meta (sampled) and measured at every step (full): the same account, but for the few records that
    # exist only where the data does (docs/counting.md)
    for key in ("end_to_end_share_saved", "attention_share_saved"):
        assert sampled[key] == pytest.approx(full[key], rel=1e-6)
    assert sampled["attention_share_saved"] > 0.3  # main: 0.0% for taylorseer, 1 cached step of 3 for deepcache
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
    assert sum(ap["flops_saved_by_stage"].values()) == pytest.approx(ap["end_to_end_share_saved"] * dense_total)
    assert sum(ap["flops_by_stage"].values()) == pytest.approx(ap["flops_total"])


def test_masked_calls_left_dense_are_named(tmp_path):
    r = diffprobe.profile(model="tiny-pixart", steps=2, sample_steps=0, approx="topk=4", out=str(tmp_path))
    assert "key-padding mask" in r.approx["note"]


# -- 18. repeated timings with their spread --------------------------------------------------------------------------
@pytest.mark.slow
def test_approx_repeat_reports_the_median_and_spread(tmp_path, capsys):
    d = _json(capsys, ["approx", "--model", "digits", "--steps", "2", "--per-digit", "1", "--eps", "1e-2",
                       "--repeat", "3", "--out", str(tmp_path / "a"), "-q", "--no-save-masks"])
    for row in d["results"]:
        assert row["runs"] == 3 and row["denoiser_s_min"] <= row["denoiser_s"] <= row["denoiser_s_max"]
    assert d["repeat"] == 3


# -- 23. step lines summarised ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_reuse_steps_are_summarised_by_kind(tmp_path, capsys):
    assert main(["profile", "--model", "tiny", "--steps", "12", "--mode", "analytic", "--approx", "deepcache=2",
                 "--out", str(tmp_path / "o"), "-q"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  step")]
    assert len(lines) == 2, lines  # main printed one line per step (13 for DeepCache's 12 steps and PNDM's)
    # branch 0's cached step: of up_blocks.3 only its last layer (resnets.1, with its attention) ran
    assert any("the layers that ran): up_blocks.3 (" in ln and "every 2nd" in ln for ln in lines), lines


@pytest.mark.slow
def test_sampled_reuse_replay_ignores_options_of_the_measured_run(tmp_path):
    # the meta replay of a sampled reuse run inherits nothing that analytic mode refuses (--op-timer, --mask-interval)
    r = diffprobe.profile(model="tiny", steps=4, approx="block=0.5+deepcache=2", mask_interval=2,
                          op_timer="profiler", out=str(tmp_path))
    assert r.approx["denoiser_evals_accounted"] == 4 and r.approx["mask_interval"] == 2


def test_an_interrupted_approx_pass_keeps_the_dense_run(tmp_path):
    def interrupt(stage, done, total):
        if stage == "approx":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffprobe.profile(model="tiny", steps=2, approx="deepcache=2", out=str(tmp_path), progress=interrupt)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "interrupted" and "--approx pass; the dense run is complete" in run["error"]
    assert run["flops"]["total"] > 0 and run["stages"]["denoiser"] > 0  # the dense run, measured, is kept


@pytest.mark.parametrize("calls, pairs", [(4, 1), (2, 0), (3, 1)])
def test_an_interrupt_while_timing_the_setting_keeps_the_pairs_that_finished(calls, pairs, tmp_path,
                                                                             monkeypatch):
    """Dense and the setting are timed in turn (--repeat 2, after one untimed warm-up pair): an interrupt in the
    ``calls``-th timed run (the setting's second, its first, dense's second) keeps the pairs that finished before it
    and the setting's account; a dense run whose setting's run did not finish is left out."""
    import diffprobe.run.setting as setting

    ran, real = [], setting.measured_pass

    def counted(cfg, *args, **kwargs):
        ran.append(not cfg.trace_ops)  # the timed runs are untraced (the setting's records come from a traced one)
        if sum(ran) == 2 + calls:  # after the warm-up pair, the `calls`-th timed run interrupted
            raise KeyboardInterrupt
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(setting, "measured_pass", counted)
    with pytest.raises(KeyboardInterrupt):
        diffprobe.profile(model="tiny", steps=2, approx="deepcache=2", repeat=2, warmup=1, out=str(tmp_path))
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "interrupted" and run["stages"]["denoiser"] > 0
    ap = run["approx"]
    assert f"after {pairs} of 2 timed pairs" in ap["interrupted"]
    assert ap["denoiser_share_saved"] > 0  # the account, whatever was timed
    if pairs:
        assert ap["denoiser_seconds"] > 0 and ap["dense_untraced_denoiser_seconds"] > 0
        assert (tmp_path / "image_approx.png").exists()
    else:
        assert ap["denoiser_seconds"] is None and ap["dense_untraced_denoiser_seconds"] is None
    assert (tmp_path / "ops_approx.parquet").exists()
