"""Bad input on the command line: one line on stderr, exit status 2, before any work; help and defaults."""


import pytest

import diffprobe
from diffprobe.cli import main
from tests.cli_checks import one_line_error as _one_line_error
from tests.cli_checks import strict_json

TINY = ["--model", "tiny", "--steps", "1", "-q"]



def test_kernels_bench_refuses_what_memory_cannot_hold(capsys):
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "10000000"], "GiB", "available")
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "256", "--block-size", "100000"], "--block-size 100000")


# -- Medium -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["profile", "approx"])
@pytest.mark.parametrize("side", ["--height", "--width"])
def test_zero_size_is_refused(command, side, tmp_path, capsys):
    _one_line_error(capsys, [command, *TINY, side, "0", "--out", str(tmp_path / "o")], f"{side} must be a positive")


@pytest.mark.parametrize("command", [["sweep", "--resolutions", "64"], ["sparsity"]])
def test_out_that_is_a_file(command, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(capsys, [*command, "--model", "tiny", "--steps", "1", "-q", "--out", str(f)], "is a file")


@pytest.mark.slow
def test_profile_out_must_be_new_or_empty_unless_force(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["profile", *TINY, "--batch", "2", "--out", str(out)]) == 0
    assert (out / "image_1.png").exists()
    _one_line_error(capsys, ["profile", *TINY, "--out", str(out)], "not empty", "--force")
    assert main(["profile", *TINY, "--out", str(out), "--force"]) == 0
    assert not (out / "image_1.png").exists() and (out / "image.png").exists()  # nothing stale is left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    _one_line_error(capsys, ["profile", *TINY, "--out", str(other), "--force"], "did not write")
    assert (other / "notes.txt").read_text() == "keep me"
    _one_line_error(capsys, ["profile", *TINY, "--out", ""], "--out is empty")


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_seed_out_of_range(seed, tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--seed", seed, "--out", str(tmp_path / "o")], "--seed")


# -- Low ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-3", "nan", "inf"])
def test_guidance_must_be_finite_and_non_negative(value, tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--guidance", value, "--out", str(tmp_path / "o")], "--guidance")


@pytest.mark.parametrize("group, word", [("hardware", "measure"), ("kernels", "bench")])
def test_a_bare_group_prints_its_own_help(group, word, capsys):
    assert main([group]) == 0
    out = capsys.readouterr().out
    assert f"diffprobe {group}" in out and word in out and "profile" not in out


@pytest.mark.slow
def test_misleading_messages(tmp_path, capsys):
    _one_line_error(capsys, ["sweep", *TINY, "--resolutions", "8", "--out", str(tmp_path / "s")], "resolution 8x8")
    f = tmp_path / "file.json"
    f.write_text("{}")
    _one_line_error(capsys, ["report", str(f)], "is a file")
    # a block side past every matrix is one block per matrix (not an out-of-memory error blaming the image size)
    assert main(["sparsity", *TINY, "--blocks", "100000", "--tau", "0.9", "--eps", "1e-3", "--out",
                 str(tmp_path / "sp"), "--format", "json"]) == 0
    by_kind = strict_json(capsys.readouterr().out)["summary"]["64x64"]["by_kind"]
    for m in by_kind.values():
        assert m["blocks_100000_0.9"] == 1.0 and m["empty_blocks_100000_0.001"] == 0.0


def test_check_heads_must_not_be_negative(capsys):
    _one_line_error(capsys, ["kernels", "bench", "--tokens", "256", "--check-heads", "-1"], "--check-heads")


# -- interface ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("command", [["sweep", "--resolutions", "64"], ["sparsity"], ["approx", "--eps", "0"]])
def test_every_command_has_a_default_out(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--model", "tiny", "--steps", "1", "-q"]) == 0
    made = list((tmp_path / "runs").iterdir())
    assert len(made) == 1 and (made[0] / "report.html").exists()


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"diffprobe {diffprobe.__version__}"
    assert main(["profile", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "astronaut riding a horse" in text and "cuda:N" in text


def test_device_is_checked_in_analytic_mode_too(tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--mode", "analytic", "--device", "gpu0", "--out",
                             str(tmp_path / "o")], "unknown device")


def test_sparsity_help_explains_its_step_default(capsys):
    assert main(["sparsity", "--help"]) == 0
    assert "profile samples 3" in " ".join(capsys.readouterr().out.split())
