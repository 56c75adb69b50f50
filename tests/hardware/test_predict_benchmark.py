"""benchmarks/predict.py's measured side against itself: a run's rounds' spread and whether the speed probe around
each round tracked its denoiser, on synthetic rounds with hand-derived answers."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("predict_benchmark", ROOT / "benchmarks" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(rounds):
    """A run as one_run leaves it: each round's stages and speed ratio, and the rounds' spread."""
    den = [r[0] for r in rounds]
    tot = [r[0] + r[1] for r in rounds]
    return {"rounds": [{"denoiser": d, "vae_decoder": v, "speed_ratio": s} for d, v, s in rounds],
            "round_spread": {"denoiser": max(den) / min(den) - 1, "total": max(tot) / min(tot) - 1}}


def test_a_probe_that_says_each_rounds_speed_tracks_it(bench):
    # each round's denoiser seconds exactly inverse to its speed: log(s_a/s_b) = log(d_b/d_a) on every pair
    runs = {"sd15-256": _run([(10.0, 2.0, 1.2), (12.0, 2.0, 1.0)]),
            "sd15-512": _run([(20.0, 5.0, 1.25), (25.0, 5.0, 1.0), (22.0, 5.0, 25 / 22)]),
            "tiny-flux": _run([(0.01, 0.01, 9.0), (0.02, 0.01, 1.0)])}  # not held to the targets: left out
    out = bench.self_agreement(runs)
    assert out["denoiser"] == pytest.approx((0.2 + 0.25) / 2)  # 12/10 - 1 and 25/20 - 1
    assert out["total"] == pytest.approx((14 / 12 - 1 + 30 / 25 - 1) / 2)
    assert out["speed_tracking"]["pairs"] == 1 + 3
    assert out["speed_tracking"]["correlation"] == pytest.approx(1.0)
    assert out["speed_tracking"]["slope"] == pytest.approx(1.0)


def test_a_probe_against_the_rounds_speed_correlates_negatively(bench):
    # the probe says faster where the round ran slower, by the same log distance: slope -1
    runs = {"a": _run([(10.0, 1.0, 1.0), (12.0, 1.0, 1.2)]), "b": _run([(10.0, 1.0, 1.0), (15.0, 1.0, 1.5)]),
            "c": _run([(10.0, 1.0, 1.1), (11.0, 1.0, 1.21)])}
    track = bench.self_agreement(runs)["speed_tracking"]
    assert track["correlation"] == pytest.approx(-1.0)
    assert track["slope"] == pytest.approx(-1.0)


def test_one_round_has_no_self_agreement(bench):
    assert bench.self_agreement({"sd15-256": {"stages": {}}}) is None
