"""The command line: output formats, and one line + exit 2 for every bad input."""

import json
import os
import subprocess
import sys

import pytest

from diffprobe.cli import main


def test_profile_json_is_clean_on_stdout(tmp_path, capsys):
    rc = main(["profile", "--model", "tiny", "--steps", "2", "--sample-steps", "0", "--out", str(tmp_path),
               "--format", "json", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0
    d = json.loads(captured.out)
    assert d["model"] == "tiny" and d["steps"] == 2 and "denoiser" in d["stages"]


@pytest.mark.slow
def test_profile_table_mentions_random_weights(tmp_path, capsys):
    assert main(["profile", "--model", "tiny", "--steps", "4", "--out", str(tmp_path), "-q"]) == 0
    text = capsys.readouterr().out
    assert "random weights" in text and "projection" in text and "vae_decoder" in text


@pytest.mark.slow
def test_models_lists_parameter_counts(capsys):
    assert main(["models", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["sd15"]["params"]["unet"] == 859_520_964


BAD = [
    (["profile", "--model", "tiny", "--height", "100"], "multiple of 8"),
    (["profile", "--model", "tiny", "--width", "8"], "minimum"),
    (["profile", "--model", "tiny", "--steps", "0"], "--steps"),
    (["profile", "--model", "tiny", "--batch", "0"], "--batch"),
    (["profile", "--model", "sd9"], "known models"),
    (["profile", "--model", "tiny", "--dtype", "float8"], "--dtype"),
    (["profile", "--model", "tiny", "--steps", "many"], "--steps"),
    (["profile", "--model", "tiny", "--weights", "/no/such/path"], "does not exist"),
    (["profile", "--model", "tiny", "--out", "/proc/diffprobe-cannot-write"], "cannot write"),
    (["profile", "--no-such-flag"], "no-such-flag"),
    (["profile", "--model", "tiny", "--mode", "simulated"], "--mode"),
    (["profile", "--model", "tiny", "--hardware", "B200"], "unknown hardware preset"),
    (["profile", "--model", "tiny", "--mode", "analytic", "--chrome-trace"], "--chrome-trace"),
    (["profile", "--model", "tiny", "--op-timer", "cupti"], "unknown --op-timer 'cupti'"),
    (["sweep", "--model", "tiny", "--resolutions", "64,100", "--out", "/tmp/x"], "multiple of 8"),
    (["sweep", "--model", "tiny", "--resolutions", "64,big", "--out", "/tmp/x"], "cannot parse resolution"),
    (["sweep", "--model", "tiny", "--resolutions", "", "--out", "/tmp/x"], "empty"),
    (["sweep", "--model", "tiny", "--batch", "", "--out", "/tmp/x"], "--batch is empty"),
    (["sweep", "--model", "tiny", "--resolutions", "64", "--hardware", "nope", "--out", "/tmp/x"], "nope"),
    (["hardware", "show", "B200"], "unknown hardware preset"),
    (["sweep", "--model", "tiny", "--resolutions", "64", "--mode", "measured", "--max-point-seconds", "-1",
      "--out", "/tmp/x"], "--max-point-seconds must be positive"),
    (["compare", "/tmp"], "at least two run folders"),
    (["kernels", "bench", "--density", "0"], "--density 0 is outside (0, 1]"),
    (["kernels", "bench", "--density", "1.5"], "--density 1.5 is outside (0, 1]"),
    (["kernels", "bench", "--tokens", "0"], "--tokens 0 must be a positive integer"),
    (["kernels", "bench", "--block-size", "0"], "--block-size 0 must be a positive integer"),
    (["kernels", "bench", "--heads", "-2"], "--heads -2 must be a positive integer"),
    (["kernels", "bench", "--device", "tpu"], "--device 'tpu'"),
    (["kernels", "bench", "--backend", "fast"], "--backend"),
    (["kernels", "bench", "--dtype", "float8"], "--dtype"),
    (["kernels", "bench", "--backend", "flex", "--block-size", "48", "--device", "cuda"], "--device cuda"),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_kernels_bench_json(capsys):
    assert main(["kernels", "bench", "--tokens", "200", "--density", "0.25", "--heads", "2", "--head-dim", "16",
                 "--block-size", "32", "--repeats", "1", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # 200 tokens in blocks of 32: 7 blocks (the last holds 8); round(0.25 * 7) = 2 kept per query block
    assert r["kept_density"] == pytest.approx(2 / 7) and r["limit"] == pytest.approx(3.5)
    assert r["backend"] == "cpp" and r["checked_heads"] == 2 and r["max_rel_error"] < 1e-5
    for key in ("dense_s", "sparse_s", "kernel_s"):
        assert r[key] > 0
    assert r["speedup"] == pytest.approx(r["dense_s"] / r["sparse_s"])
    import torch

    assert r["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and r["cpu_model"]
    assert r["efficiency"] == pytest.approx(r["speedup"] * r["kept_density"])  # efficiency = speedup / limit


def test_kernels_bench_table(capsys):
    assert main(["kernels", "bench", "--tokens", "128", "--density", "1", "--heads", "1", "--head-dim", "8",
                 "--block-size", "64", "--repeats", "1", "--backend", "gather"]) == 0
    text = capsys.readouterr().out
    assert "dense_s" in text and "sparse_s" in text and "speedup" in text and "max_rel_error" in text
    assert "block-sparse (gather)" in text and "efficiency" in text


@pytest.mark.slow
def test_pickle_without_flag_via_subprocess(tmp_path):
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"\x80\x04")
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-m", "diffprobe", "profile", "--model", "tiny", "--weights", str(ckpt)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--allow-pickle" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_sweep_json_and_resume_refusal(tmp_path, capsys):
    argv = ["sweep", "--model", "tiny", "--resolutions", "64,128", "--steps", "2", "--out", str(tmp_path / "s"),
            "--hardware", "a100-sxm-80gb", "--format", "json", "-q"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["points"]) == {"64x64-b1", "128x128-b1"} and "exponents" in d["findings"]
    assert d["findings"]["points"][0]["roofline"]["preset"] == "A100-SXM-80GB"
    argv[argv.index("--steps") + 1] = "3"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another configuration" in err and "start fresh" in err


def test_preset_missing_a_field_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ntitle = "x"\nsource = "x"\nmemory_bytes = 1e9\n[peak_flops]\nfloat32 = 1e12\n')
    assert main(["hardware", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing field 'memory_bandwidth'" in err


def test_hardware_list_and_show(capsys):
    assert main(["hardware", "show", "h100-sxm", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["peak_flops"]["bfloat16"] == 989.4e12 and "datasheet" in d["source"]
    assert main(["hardware", "list"]) == 0
    text = capsys.readouterr().out
    assert "H200" in text and "this-cpu" in text
