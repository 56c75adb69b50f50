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


# -- 3, 8. compare of sparsity and approx runs -----------------------------------------------------------------------
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
