"""Roofline arithmetic checked by hand on a few ops."""

import pandas as pd
import pytest

from diffprobe.analyses import roofline
from diffprobe.hardware.presets import from_dict

PRESET = from_dict({"name": "toy", "title": "toy", "source": "test", "memory_bytes": 1e9,
                    "memory_bandwidth": 1e12, "peak_flops": {"float32": 1e14, "float16": 4e14,
                                                             "bfloat16": 4e14}}, "test")


def _ops(rows):
    cols = ["stage", "layer_type", "dtype", "flops", "bytes_read", "bytes_written"]
    df = pd.DataFrame(rows, columns=cols)
    df["bytes_read_unfused"], df["bytes_written_unfused"] = df["bytes_read"], df["bytes_written"]
    return df


def test_three_ops_by_hand():
    n = 1024
    ops = _ops([
        # fp32 matmul n×n×n: 2n³ FLOPs, reads two n×n, writes one n×n
        ("denoiser", "conv", "float32", 2 * n**3, 2 * n * n * 4, n * n * 4),
        # fp16 add of 1M elements: 1 FLOP each, reads 2, writes 1
        ("denoiser", "elementwise", "float16", 10**6, 2 * 2 * 10**6, 2 * 10**6),
        ("denoiser", "view", "float32", 0, 0, 0),
    ])
    r = roofline.op_roofline(ops, PRESET)
    # matmul: compute 2147483648 / 1e14 = 21.47 us > memory 12582912 / 1e12 = 12.58 us -> compute-bound
    assert r["roofline_s"][0] == pytest.approx(2 * n**3 / 1e14)
    assert r["bound"][0] == "compute" and r["intensity"][0] == pytest.approx(2 * n**3 / (3 * n * n * 4))
    # add: compute 1e6 / 4e14 = 2.5 ns < memory 6e6 / 1e12 = 6 us -> memory-bound
    assert r["roofline_s"][1] == pytest.approx(6e-6) and r["bound"][1] == "memory"
    assert r["roofline_s"][2] == 0 and r["bound"][2] == "none"
    pred = roofline.prediction(r)
    assert pred["total_s"] == pytest.approx(2 * n**3 / 1e14 + 6e-6)
    assert pred["compute_bound_share"] == pytest.approx((2 * n**3 / 1e14) / pred["total_s"])
    # the scalar form agrees: attainable FLOP/s of the add is intensity x bandwidth = (1/6) x 1e12
    point = roofline.roofline(10**6, 6 * 10**6, 4e14, 1e12)
    assert float(point["attainable_flops"]) == pytest.approx(1e12 / 6)


def test_versus_measured_by_hand():
    ops = _ops([("denoiser", "conv", "float32", 10**12, 10**9, 10**9),
                ("vae_decoder", "conv", "float32", 10**11, 0, 0)])
    seconds = {"total": 0.05, "by_stage": {"denoiser": 0.04, "vae_decoder": 0.01}, "by_layer_type": {"conv": 0.045,
                                                                                               "unattributed": 0.005}}
    vm = roofline.versus_measured(roofline.op_roofline(ops, PRESET), seconds, PRESET)
    # unet: max(1e12/1e14, 2e9/1e12) = 0.01 s predicted vs 0.04 s measured -> error -75%, 25 TFLOP/s achieved
    assert vm["by_stage"]["denoiser"]["predicted_s"] == pytest.approx(0.01)
    assert vm["by_stage"]["denoiser"]["error"] == pytest.approx(-0.75)
    assert vm["by_stage"]["denoiser"]["fraction_of_peak"] == pytest.approx(0.25)
    assert vm["by_layer_type"]["conv"]["predicted_s"] == pytest.approx(0.011)
    assert "unattributed" not in vm["by_layer_type"]
