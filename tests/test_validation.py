"""docs/validation.md's rows: published figures reproduced by one diffprobe command each, within 0.1%."""

import json

import pytest

from diffprobe.cli import main

pytestmark = pytest.mark.validation  # full-size analytic runs: make validate (CI runs it after make test)


def _run(tmp_path, *argv) -> dict:
    assert main(["profile", *argv, "--mode", "analytic", "--out", str(tmp_path), "-q", "--format", "json"]) == 0
    return json.loads((tmp_path / "run.json").read_text())


# T-GATE (Liu et al., 2024), Table 2: MACs of the denoiser's convolutions and linear layers (calflops' convention)
# without and with T-GATE, 25 DPM-Solver steps with CFG (the LCM rows: 4 LCM steps, no CFG), at each model's size.
# The table gives the MACs; the gate step that reproduces each row is the one named here (5 for the SD UNets, 8
# for PixArt-α, 1 for the 4-step LCMs).
TGATE_TABLE_2 = [  # model, extra arguments, gate, published dense and T-GATE MACs
    ("sd15", {"steps": 25, "scheduler": "dpm++"}, 5, 16.938e12, 9.875e12),
    ("sd21", {"steps": 25, "scheduler": "dpm++"}, 5, 38.041e12, 22.208e12),
    ("sdxl", {"steps": 25, "scheduler": "dpm++"}, 5, 149.438e12, 84.438e12),
    ("pixart-alpha", {"steps": 25}, 8, 107.031e12, 65.318e12),
    ("lcm-sdxl", {}, 1, 11.955e12, 11.171e12),
    ("lcm-pixart", {}, 1, 8.563e12, 7.623e12),
]


@pytest.mark.slow
@pytest.mark.parametrize("model, extra, gate, dense, gated", TGATE_TABLE_2, ids=[r[0] for r in TGATE_TABLE_2])
def test_tgate_table_2_macs(tmp_path, model, extra, gate, dense, gated):
    from diffprobe.run.profile import ProfileConfig, run_profile

    d = run_profile(ProfileConfig(model=model, mode="analytic", approx=f"tgate={gate}", out=str(tmp_path),
                                  **extra)).to_dict()
    if "scheduler" in extra:
        assert d["scheduler"] == "DPMSolverMultistepScheduler" and d["denoiser_evals"] == 25
    ap = d["approx"]
    assert d["macs_conv_linear"]["denoiser"] == ap["dense_macs_conv_linear"]["denoiser"]
    assert ap["dense_macs_conv_linear"]["denoiser"] / dense == pytest.approx(1, abs=1e-3)
    assert ap["macs_conv_linear"]["denoiser"] / gated == pytest.approx(1, abs=1e-3)


@pytest.mark.slow
def test_deepcache_table_3_sd15_plms_macs_per_step(tmp_path, capsys):
    # DeepCache, Table 3: SD 1.5 with PLMS, 338.83 G MACs per step (one image's UNet evaluation)
    d = _run(tmp_path, "--model", "sd15", "--steps", "2")
    assert d["scheduler"] == "PNDMScheduler" and d["cfg"] is True
    per_image_eval = d["macs_conv_linear"]["denoiser"] / d["denoiser_evals"] / 2  # the CFG batch of two, halved
    assert per_image_eval / 338.83e9 == pytest.approx(1, abs=1e-3)
    per = d["denoiser_per_call_and_sample"]  # what run.json states directly
    assert per["samples_per_call"] == 2 and per["macs_conv_linear"] == pytest.approx(per_image_eval)
