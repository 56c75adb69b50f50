"""Sampled steps and schedule lengths: PixArt stops after the sampled steps too; steps a scheduler cannot take are
refused."""

import pytest

import diffprobe
from tests.cli_checks import one_line_error as _one_line_error

# -- 12. composites apart ------------------------------------------------------------------------------------------


# -- 1. sampled steps stop the loop on every pipeline ------------------------------------------------------------
def test_pixart_stops_after_the_sampled_steps(tmp_path):
    # PixArt's pipeline has no callback_on_step_end: main ran all 6 steps under "measured 2 of 6"
    r = diffprobe.profile(model="tiny-pixart", steps=6, sample_steps=2, out=str(tmp_path))
    d = r.to_dict()
    assert len(d["step_times"]) == 2 and d["denoiser_evals_measured"] == 2
    den = r.ops[r.ops["stage"] == "denoiser"]
    assert sorted(den["step"].unique()) == [0, 1]
    measured = sum(s["denoiser_s"] for s in d["step_times"])
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
