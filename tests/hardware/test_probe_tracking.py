"""benchmarks/probe_tracking.py's summary on synthetic samples with hand-derived spreads: an operator that moves
exactly with a probe has no spread over it."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_an_operator_that_moves_with_the_gemm_probe_has_no_spread_over_it():
    spec = importlib.util.spec_from_file_location("probe_tracking", ROOT / "benchmarks" / "probe_tracking.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # GEMM probe 1..11 (p10 2, median 6, p90 10); the operator at twice it; the copy probe at 12 / it
    rows = [{"gemm_probe": g, "copy_probe": 12.0 / g, "op": 2.0 * g} for g in range(1, 12)]
    out = bench.summary(rows, ["op"])["op"]
    assert out["as_timed"] == pytest.approx((20 - 4) / 12)
    assert out["over_gemm_probe"] == pytest.approx(0.0, abs=1e-12)
    assert out["over_copy_probe"] == pytest.approx((100 / 6 - 4 / 6) / (36 / 6))  # 2g / (12 / g) = g² / 6
    assert out["corr_gemm_probe"] == pytest.approx(1.0)
    assert out["corr_copy_probe"] == pytest.approx(-1.0)  # log(12 / g) = log 12 - log g
