"""What a reader sees: standard JSON, one warning per cut prompt, tables and figures that say what they cover."""

import json

import pytest

from diffprobe.cli import main
from tests.cli_checks import strict_json

TINY = ["--model", "tiny", "--steps", "1", "-q"]



def test_profile_approx_is_in_the_report(tmp_path):
    out = tmp_path / "p"
    assert main(["profile", *TINY, "--approx", "topk=4", "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "FLOPs, topk=4" in html and "image_approx.png" in html
    assert "FLOPs saved (" in html and "of its attention core" in html


@pytest.mark.slow
def test_approx_json_is_standard(tmp_path, capsys):
    assert main(["approx", *TINY, "--method", "threshold", "--eps", "0", "--out", str(tmp_path / "a"),
                 "--format", "json"]) == 0
    d = strict_json(capsys.readouterr().out)
    strict_json((tmp_path / "a" / "approx.json").read_text())
    noop = d["results"][1]
    assert noop["psnr"] is None and noop["identical"] is True


@pytest.mark.slow
def test_a_long_prompt_is_cut_with_one_warning(tmp_path, capsys):
    prompt = " ".join(["a red horse"] * 40)  # 120 words: more than CLIP's 77 tokens
    assert main(["profile", *TINY, "--prompt", prompt, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.count("diffprobe: warning:") == 1 and err.count("\n") == 1 and "cut" in err
    assert "no FLOP formula" not in err


# -- cosmetic -----------------------------------------------------------------------------------------------------
def test_number_formats():
    from diffprobe.units import fmt_bytes, fmt_k, fmt_n, si_scale

    assert fmt_n(6.49064e18) == "6.49 E" and fmt_n(1234) == "1.23 k"
    assert fmt_k(-0.001) == "0.00" and fmt_k(-1.234) == "-1.23"
    assert si_scale(3.0e8, "FLOP") == (1e6, "MFLOP") and si_scale(5.0, "FLOP") == (1.0, "FLOP")
    assert fmt_bytes(512) == "512 B" and fmt_bytes(3 * 2**30) == "3.00 GiB"


@pytest.mark.slow
def test_profile_table_cosmetics(tmp_path, capsys):
    assert main(["profile", *TINY, "--hardware", "H100-SXM", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "tiny (tiny" not in out
    assert "Roofline on H100-SXM" in out and "measured on a cpu against the gpu preset" in out
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
    runs = strict_json(capsys.readouterr().out)["runs"]
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
