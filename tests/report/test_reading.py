"""What the report says: units, crossover bounds, composite settings, untraced seconds, analytic runs, reused masks,
denoiser names."""

import pytest

import diffprobe
from diffprobe.cli import main


# -- 12. composites apart ------------------------------------------------------------------------------------------
def _row(method, value, setting, saved, ssim=0.95, **kw):
    return {"method": method, "param": "tau", "value": value, "setting": setting, "attention_share_saved": saved,
            "end_to_end_share_saved": saved / 4, "kept_fraction": 1 - saved, "denoiser_s": 1.0, "psnr": 30.0,
            "ssim": ssim, "accuracy": None, "mask_interval": 1 if method == "block" else None, **kw}


def test_bytes_format_keeps_its_unit():
    from diffprobe.units import fmt_n

    assert fmt_n(0, "B") == "0 B" and fmt_n(3280, "B") == "3.28 kB" and fmt_n(12) == "12"


# -- 7. extrapolated crossovers stay within reason --------------------------------------------------------------
def test_a_crossover_far_beyond_the_sweep_is_not_given():
    from diffprobe.analyses.scaling import crossover

    # a grows as side^2.0001, b as side^2 and 100x larger: the power laws cross near 100^(1/1e-4) px
    far = crossover([64, 128], [1.0, 4.0 * 2**0.0001], [100.0, 400.0])
    assert far["side"] is None and "beyond" in far["why"] and far["beyond"] == 8 * 128
    near = crossover([64, 128], [1.0, 8.0], [10.0, 40.0])  # a ~ side^3, b ~ side^2: cross at 64 * 10 = 640 px
    assert near["extrapolated"] and near["side"] == pytest.approx(640)


def test_a_composite_setting_is_its_own_series():
    from diffprobe.analyses.findings import approx_findings
    from diffprobe.units import setting_series

    rows = [_row("dense", None, None, 0.0, ssim=1.0), _row("block", 0.8, "block=0.8", 0.179),
            _row("block", 0.8, "block=0.8+deepcache=2", 0.46)]
    found = approx_findings({"results": rows})
    assert any(f.startswith("block: up to 17.9%") for f in found), found
    assert any(f.startswith("block+deepcache: up to 46.0%") for f in found), found
    assert [setting_series(r) for r in rows[1:]] == ["block", "block+deepcache"]


# -- 13. the report's seconds are the untraced ones, as in the terminal ----------------------------------------------
def test_report_compares_untraced_seconds_with_untraced_dense():
    from diffprobe.report.profile import approx_summary_lines

    ap = {"method": "block", "value": 0.5, "setting": "block=0.5+taylorseer=2", "denoiser_share_saved": 0.3,
          "attention_share_saved": 0.4, "end_to_end_share_saved": 0.1, "kept_fraction": 0.6,
          "denoiser_seconds": 1.15, "dense_denoiser_seconds": 1.66, "dense_untraced_denoiser_seconds": 1.64,
          "kernel": "cpp"}
    text = "; ".join(approx_summary_lines(ap))
    assert "1.64 s" in text and "1.66 s" not in text and "1.15 s" in text
    assert text.startswith("block=0.5+taylorseer=2: 30.0% of the denoiser's FLOPs saved (40.0% of its attention")


# -- 24. every tokenizer's cut is named ---------------------------------------------------------------------------
def test_a_t5_cut_is_named(tmp_path, capsys):
    prompt = " ".join(["astronaut"] * 20)  # 20 words: past tiny-flux's 16 T5 tokens, within CLIP's 77
    assert main(["profile", "--model", "tiny-flux", "--mode", "analytic", "--steps", "1", "--prompt", prompt,
                 "--out", str(tmp_path / "o"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "tokenizer_2 (T5); its text encoder takes 16" in err, err


# -- 25. reports as a reader sees them ----------------------------------------------------------------------------
def test_equal_costs_sort_in_block_order():
    import pandas as pd

    from diffprobe.analyses.scaling import bottlenecks

    ops = pd.DataFrame({"stage": "denoiser", "level": [f"block.{i}" for i in (10, 2, 1, 11)], "tokens": 16,
                        "layer_type": "ffn", "module": "m", "attn_kind": "", "flops": 100})
    assert [b["level"] for b in bottlenecks(ops)] == ["block.1", "block.2", "block.10", "block.11"]


def test_analytic_report_does_not_claim_timings(tmp_path):
    from diffprobe.report.html import build_report

    diffprobe.profile(model="tiny", steps=1, mode="analytic", out=str(tmp_path))
    html = build_report(tmp_path).read_text()
    assert "timings and FLOPs are real" not in html and "nothing was timed" in html


def test_a_reused_mask_is_named_once():
    from diffprobe.report.approx import approx_rows

    rows = [_row("dense", None, None, 0.0, ssim=1.0, kernel="dense", identical=True),
            _row("block", 0.8, "block=0.8+deepcache=2 mask every 3", 0.4, kernel="cpp", mask_interval=3)]
    rows[0]["psnr"] = None
    _, table = approx_rows(rows)
    assert table[1][1].count("mask every 3") == 1, table[1]


def test_dit_and_unet_sweeps_name_their_denoiser_in_both_renderers(tmp_path, capsys):
    from diffprobe.analyses.findings import profile_findings

    for model in ("tiny-sd3", "tiny"):
        assert main(["sweep", "--model", model, "--steps", "1", "--resolutions", "64,128", "--out",
                     str(tmp_path / model), "-q"]) == 0
        terminal = capsys.readouterr().out
        html = (tmp_path / model / "report.html").read_text()
        if model == "tiny-sd3":  # joint attention shown, no conv column, no "UNet" anywhere
            assert "joint attn" in terminal and ">joint attn<" in html
            assert "UNet" not in terminal and "UNet" not in html and ">conv<" not in html
        else:
            assert "self-attn" in terminal and ">conv<" in html and ">self-attn<" in html
    r = diffprobe.profile(model="tiny-sd3", steps=1, mode="analytic", out=str(tmp_path / "p"))
    found = profile_findings(r.to_dict(), r.ops)
    assert any(f.startswith("Denoiser FLOPs by layer class") for f in found) and not any("UNet" in f for f in found)
