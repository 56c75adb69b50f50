"""compare: sparsity runs, approx runs, and runs of different kinds (refused, named with their article)."""

import json

import pytest

import diffprobe
from diffprobe.cli import main
from tests.cli_checks import one_line_error as _one_line_error


def _json(capsys, argv) -> dict:
    assert main(argv + ["--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- 12. composites apart ------------------------------------------------------------------------------------------


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
    assert d["of"] == "approx" and "dense.denoiser_s" in d["metrics"]  # the settings they share: dense
    rows = {r.get("setting") or r["method"]: r for r in
            json.loads((tmp_path / "a" / "approx.json").read_text())["results"]}
    assert d["metrics"]["threshold=0.01.attention_share_saved"]["a"] == rows["threshold=0.01"]["attention_share_saved"]
    assert d["metrics"]["threshold=0.1.psnr"]["a"] is None  # a's settings beside b's, each where it ran
    assert "threshold=0.01.attention_share_saved" in text


def test_compare_of_different_kinds_names_them_with_their_article(tmp_path, capsys):
    assert main(["profile", "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "p"), "-q",
                 "--format", "json"]) == 0
    capsys.readouterr()
    (tmp_path / "x").mkdir()
    approx = {"schema_version": diffprobe.records.schema.VERSIONS["approx"], "kind": "approx", "model": "tiny",
              "height": 64, "width": 64, "steps": 1, "guidance": 7.5, "seed": 0, "prompts": ["p"],
              "renormalize": False, "block": 64, "rank": 8, "mask_interval": 1, "repeat": 1, "mask_intervals": [1],
              "random_weights": True, "total_flops": 1.0, "results": [], "run_dir": "x", "notes": []}
    (tmp_path / "x" / "approx.json").write_text(json.dumps(approx))
    _one_line_error(capsys, ["compare", str(tmp_path / "p"), str(tmp_path / "x")], "is an approx")
