"""Run folders: locks, interruption (what was measured is kept), default names, compare's inputs and outputs."""

import json
from pathlib import Path

import pytest

import diffprobe
from diffprobe.cli import main
from diffprobe.errors import DiffprobeError
from tests.cli_checks import held_elsewhere, strict_json
from tests.cli_checks import one_line_error as _one_line_error

TINY = ["--model", "tiny", "--steps", "1", "-q"]



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


def _two_runs(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["profile", *TINY, "--mode", "analytic", "--out", str(out)]) == 0
    return a, b


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
    d = strict_json(capsys.readouterr().out)
    assert [r["status"] for r in d["runs"]] == ["ok", "failed"]
    assert len(d["warnings"]) == 1 and "out of memory" in d["warnings"][0]
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c2")]) == 0
    assert "(failed)" in capsys.readouterr().out
    assert "did not finish" in (tmp_path / "c2" / "report.html").read_text()


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


def test_an_interrupt_before_the_pipeline_is_built_leaves_a_run_json_saying_so(tmp_path, monkeypatch):
    """The folder is made first; an interrupt while the machine is described (the first second) leaves its
    run.json, not an empty folder."""
    import diffprobe.run.profile as profile

    def interrupt(device):
        raise KeyboardInterrupt

    monkeypatch.setattr(profile, "environment", interrupt)
    with pytest.raises(KeyboardInterrupt):
        diffprobe.profile(model="tiny", steps=2, out=str(tmp_path / "o"))
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["status"] == "interrupted" and "nothing was measured" in run["error"]
