"""Interruption and failure: SIGTERM and Ctrl-C keep what was measured, held folders are refused, a sweep that never
succeeds fails."""

import json

import pytest

import diffprobe
from diffprobe.cli import main
from tests.cli_checks import one_line_error as _one_line_error

# -- 12. composites apart ------------------------------------------------------------------------------------------


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
    assert run["denoiser_evals_measured"] == 2 and run["denoiser_evals"] == 5 and run["image_complete"] is False
    acc = accel_run(out, "sa-dense")
    assert any("did not finish" in w and "2 of 5" in w for w in acc["warnings"])
    assert main(["accel", str(out)]) == 0
    assert "did not finish" in capsys.readouterr().err


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
