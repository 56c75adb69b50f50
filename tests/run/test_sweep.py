"""Sweeps: points written one by one, resumable after a kill, refusing to mix configurations."""

import json

import pytest

import diffprobe.run.sweep as sweep_mod
from diffprobe.errors import DiffprobeError
from diffprobe.run.profile import ProfileConfig
from diffprobe.run.sweep import SweepConfig, parse_ints, parse_resolutions, run_sweep


def _config(out, **kw):
    base = ProfileConfig(model="tiny", steps=2, mode="analytic", **kw)
    return SweepConfig(base=base, resolutions=[(64, 64), (128, 128), (256, 256)], out=str(out))


@pytest.mark.slow
def test_sweep_states_exponents_and_crossover(tmp_path):
    state = run_sweep(_config(tmp_path / "s"))
    f = state["findings"]
    assert [p["name"] for p in f["points"]] == ["64x64-b1", "128x128-b1", "256x256-b1"]
    # the N² core of self-attention grows exactly as side^4, convolution as side^2
    assert f["exponents"]["flops"]["self_attention_core"]["k"] == pytest.approx(4.0)
    assert f["exponents"]["flops"]["conv"]["k"] == pytest.approx(2.0)
    # tiny: self-attention (whole layers) passes convolution between 128 and 256 px
    cross = f["crossover"]["flops"]
    shares = {p["side"]: p["flops"]["denoiser"]["self_attention"] / p["flops"]["denoiser"]["conv"] for p in f["points"]}
    assert shares[128] < 1 < shares[256] and 128 < cross["side"] < 256 and not cross["extrapolated"]
    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert saved["findings"]["crossover"] == f["crossover"]
    assert (tmp_path / "s" / "points" / "128x128-b1" / "ops.parquet").exists()


@pytest.mark.slow
def test_killed_sweep_resumes_without_loss_or_recomputation(tmp_path, monkeypatch):
    real = sweep_mod.run_profile
    calls = []

    def dying(cfg, **kw):
        calls.append(cfg.height)
        if cfg.height == 128 and len(calls) == 2:
            real(cfg, **kw)  # the point's files are written ...
            raise KeyboardInterrupt  # ... and the process is killed before the point is committed
        return real(cfg, **kw)

    monkeypatch.setattr(sweep_mod, "run_profile", dying)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_config(tmp_path / "s"))
    assert calls == [64, 128]
    assert (tmp_path / "s" / "points" / "64x64-b1" / "run.json").exists()
    assert not (tmp_path / "s" / "points" / "128x128-b1").exists()  # a half-done point is never a point
    calls.clear()
    state = run_sweep(_config(tmp_path / "s"))
    assert calls == [128, 256]  # 64 px was kept, not recomputed
    assert len(state["findings"]["points"]) == 3
    calls.clear()
    run_sweep(_config(tmp_path / "s"))
    assert calls == []


def test_sweep_folder_of_another_configuration_is_refused(tmp_path):
    run_sweep(SweepConfig(base=ProfileConfig(model="tiny", steps=2, mode="analytic"), resolutions=[(64, 64)],
                          out=str(tmp_path / "s")))
    with pytest.raises(DiffprobeError, match="another configuration .*steps.*start fresh"):
        run_sweep(SweepConfig(base=ProfileConfig(model="tiny", steps=3, mode="analytic"), resolutions=[(64, 64)],
                              out=str(tmp_path / "s")))


def test_measured_point_over_budget_is_skipped_and_the_rest_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_mod, "_predicted_seconds", lambda cfg, preset: 0.001 * cfg.height)
    sc = SweepConfig(base=ProfileConfig(model="tiny", steps=1, sample_steps=0), resolutions=[(64, 64), (128, 128)],
                     out=str(tmp_path / "m"), max_point_seconds=0.1)
    logged = []
    state = run_sweep(sc, log=logged.append)
    assert state["points"]["128x128-b1"]["status"] == "skipped" and "max-point-seconds" in logged[0]
    assert state["points"]["64x64-b1"]["status"] == "ok"
    assert [p["name"] for p in state["findings"]["points"]] == ["64x64-b1"]
    assert state["findings"]["points"][0]["seconds"]["stages"]["denoiser"] > 0  # measured, timed


@pytest.mark.parametrize("text, message", [
    ("256,abc", "cannot parse resolution 'abc'"), ("256,100", "not a multiple of 8"), (" , ", "empty"),
    ("0", "cannot parse"),
])
def test_bad_resolutions(text, message):
    with pytest.raises(DiffprobeError, match=message):
        parse_resolutions(text)


def test_resolution_forms():
    assert parse_resolutions("256, 768x512") == [(256, 256), (768, 512)]
    with pytest.raises(DiffprobeError, match="twice"):  # a point measured twice (issue 24): refused, not merged
        parse_resolutions("256, 768x512,256")
    assert parse_ints("1,2,4", "--batch") == [1, 2, 4]
    with pytest.raises(DiffprobeError, match="--batch"):
        parse_ints("1,x", "--batch")
