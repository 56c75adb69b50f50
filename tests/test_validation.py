"""docs/validation.md's rows: published figures reproduced by one diffprobe command each, within 0.1%."""

import json

import pytest

from diffprobe.cli import main


def _run(tmp_path, *argv) -> dict:
    assert main(["profile", *argv, "--mode", "analytic", "--out", str(tmp_path), "-q", "--format", "json"]) == 0
    return json.loads((tmp_path / "run.json").read_text())


@pytest.mark.slow
def test_tgate_table_2_sd15_macs(tmp_path, capsys):
    # T-GATE, Table 2: SD-1.5, 25 DPM-Solver steps, CFG, 512 px: 16.938 T MACs of convolutions and linear layers
    d = _run(tmp_path, "--model", "sd15", "--steps", "25", "--scheduler", "dpm++")
    assert d["scheduler"] == "DPMSolverMultistepScheduler" and d["denoiser_evals"] == 25
    assert d["macs_conv_linear"]["denoiser"] / 16.938e12 == pytest.approx(1, abs=1e-3)


@pytest.mark.slow
def test_deepcache_table_3_sd15_plms_macs_per_step(tmp_path, capsys):
    # DeepCache, Table 3: SD 1.5 with PLMS, 338.83 G MACs per step (one image's UNet evaluation)
    d = _run(tmp_path, "--model", "sd15", "--steps", "2")
    assert d["scheduler"] == "PNDMScheduler" and d["cfg"] is True
    per_image_eval = d["macs_conv_linear"]["denoiser"] / d["denoiser_evals"] / 2  # the CFG batch of two, halved
    assert per_image_eval / 338.83e9 == pytest.approx(1, abs=1e-3)
    per = d["denoiser_per_call_and_sample"]  # what run.json states directly
    assert per["samples_per_call"] == 2 and per["macs_conv_linear"] == pytest.approx(per_image_eval)
