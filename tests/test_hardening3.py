"""Issue 24 (third hardening round): each defect found by trying diffprobe as a new user would, a test per item.

Every test here failed on main before its fix (each was run there once); bad inputs give one line on stderr and exit
status 2, and nothing measured is lost."""

import json
from pathlib import Path

import pytest

import diffprobe
from diffprobe.cli import main


def _one_line_error(capsys, argv, *needles) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("diffprobe: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


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
