"""approx --prompts: a quality campaign over a prompts file, the same on the local executor and on Ray Data; FID and
confidence intervals against hand derivations; bad prompts files and options refused in one line."""

import json
import math

import numpy as np
import pytest
import torch

from diffprobe.analyses.fid import fid, frechet_distance, mean_ci, share_ci
from diffprobe.models import digits
from diffprobe.run.campaign import campaign_items, read_prompts
from tests.cli_checks import one_line_error


class _Detector(torch.nn.Module):
    """A stand-in for the TorchScript FID detector (same call: uint8-range images, ``return_features``): 8x8 pooled
    pixels through a fixed random projection to 2,048 features."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Parameter(torch.randn(192, 2048, generator=torch.Generator().manual_seed(0)))

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(img.to(torch.float32) / 127.5 - 1, (8, 8)).flatten(1)
        f = torch.tanh(x @ self.proj)
        return f if return_features else f[:, :1008]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(_Detector()), str(path))
    return path


def test_frechet_distance_by_hand():
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx(4.0 + 1.0)
    # independent dimensions add up
    d = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([1.0, 0.0]), np.diag([1.0, 1.0]))
    assert d == pytest.approx(1.0 + 0.0 + 1.0)
    x = np.random.default_rng(0).normal(size=(300, 3))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)
    assert fid(x, x + np.array([2.0, 0, 0])) == pytest.approx(4.0, rel=1e-6)  # a shift only moves the means


def test_frechet_distance_equals_scipys_matrix_square_root():
    """The pytorch-fid formula (scipy's general sqrtm of S1 S2) on correlated features: the same distance."""
    from scipy import linalg

    from diffprobe.analyses.fid import gaussian

    rng = np.random.default_rng(1)
    m1, s1 = gaussian(rng.normal(size=(2000, 32)))
    m2, s2 = gaussian(rng.normal(size=(2000, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 0.1)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-9)


def test_intervals_by_hand():
    got = mean_ci([0.0, 2.0, None])  # n = 2: t(0.975, 1) = 12.7062, s = sqrt(2), half = t s / sqrt(2)
    assert got["mean"] == 1.0 and got["n"] == 2
    assert got["ci95"] == pytest.approx([1 - 12.7062047, 1 + 12.7062047], rel=1e-6)
    zero = share_ci(0, 10)  # Wilson: upper bound z^2 / (n + z^2)
    assert zero["mean"] == 0 and zero["ci95"][0] == pytest.approx(0, abs=1e-12)
    assert zero["ci95"][1] == pytest.approx(1.959964 ** 2 / (10 + 1.959964 ** 2), rel=1e-6)
    assert mean_ci([])["mean"] is None and mean_ci([3.0])["ci95"] is None


def test_prompts_files_and_their_seeds(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("a handwritten one\n\n  the digit 2 \n")
    assert read_prompts(plain) == [("a handwritten one", None), ("the digit 2", None)]
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "three", "seed": 40}\n{"prompt": "a handwritten four"}\n')
    entries = read_prompts(lines)
    assert entries == [("three", 40), ("a handwritten four", None)]
    items = campaign_items(entries, 2, seed=7)  # own seed, then +1; otherwise the run's seed + the image's index
    assert [(i["prompt"], i["seed"]) for i in items] == [("three", 40), ("three", 41), ("a handwritten four", 9),
                                                         ("a handwritten four", 10)]


@pytest.mark.parametrize("text, needle", [
    ("", "holds no prompt"), ('{"prompt": "a"}\nnot json\n', "line 2: not JSON"),
    ('{"text": "a"}\n', 'line 1: needs a non-empty string "prompt"'),
    ('{"prompt": "a", "seed": -1}\n', '"seed" must be a non-negative integer'),
    ('{"prompt": "a", "seed": "7"}\n', '"seed" must be a non-negative integer'),
])
def test_bad_prompts_files_are_one_line(capsys, tmp_path, text, needle):
    path = tmp_path / "p.txt"
    path.write_text(text)
    one_line_error(capsys, ["approx", "--steps", "2", "--prompts", str(path), "--out", str(tmp_path / "o")], needle)
    assert not (tmp_path / "o").exists()  # refused before any work


def test_bad_campaign_options_are_one_line(capsys, tmp_path, detector):
    p = tmp_path / "p.txt"
    p.write_text("a handwritten one\n")
    fake = tmp_path / "weights.pt"
    fake.write_bytes(b"not torchscript")
    for argv, needle in [
        (["--prompts", str(tmp_path / "missing.txt")], "cannot read it"),
        (["--prompts", str(p), "--inception-weights", str(fake)], "is not a TorchScript Inception detector"),
        (["--prompts", str(p), "--inception-weights", str(tmp_path)], "is not a file"),
        (["--prompts", str(p), "--reference-images", str(tmp_path)], "--reference-images needs --inception-weights"),
        (["--prompts", str(p), "--images-per-prompt", "0"], "--images-per-prompt must be at least 1"),
        (["--inception-weights", str(detector)], "--inception-weights applies to a --prompts campaign"),
        (["--executor", "ray"], "--executor ray spreads a --prompts campaign"),
    ]:
        one_line_error(capsys, ["approx", "--steps", "2", *argv, "--out", str(tmp_path / "o")], needle)


def _campaign(tmp_path, name, detector, executor, reference=None):
    from diffprobe.cli import main

    prompts = tmp_path / "prompts.jsonl"
    if not prompts.exists():
        prompts.write_text("".join(json.dumps({"prompt": digits.prompt(d), **({"seed": 100 + d} if d % 2 else {})})
                                   + "\n" for d in (1, 4, 7)))
    if reference is not None and not reference.exists():  # four reference images: the digits fixture's own
        from PIL import Image

        reference.mkdir()
        imgs, _ = digits.images()
        for i in range(4):
            arr = ((imgs[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype("uint8")
            Image.fromarray(arr).save(reference / f"{i}.png")
    argv = ["approx", "--method", "threshold", "--eps", "0.01", "--steps", "2", "--per-digit", "1", "--prompts",
            str(prompts), "--images-per-prompt", "2", "--prompt-batch", "4", "--inception-weights", str(detector),
            "--out", str(tmp_path / name), "--format", "json", "-q", "--executor", executor,
            *(["--reference-images", str(reference)] if reference else [])]
    assert main(argv) == 0
    return json.loads((tmp_path / name / "approx.json").read_text())["campaign"]


@pytest.mark.slow
def test_a_campaign_on_ray_data_equals_the_local_one(tmp_path, capsys, detector, local_ray):
    """The command end to end on the local executor (with a reference folder), then the same chunks on a Ray Data
    actor pool: the same rows and metrics."""
    import pandas as pd

    from diffprobe.run.campaign import Campaign, chunks_of, run_chunks, summarize
    from diffprobe.run.executor import Executor
    from diffprobe.run.profile import ProfileConfig

    local = _campaign(tmp_path, "local", detector, "local", reference=tmp_path / "ref")
    capsys.readouterr()
    assert local["images"] == 6 and local["prompts"] == 3 and local["executor"] == "local"
    dense, thr = local["settings"]
    assert dense["identical_images"] == 6 and dense["psnr"]["n"] == 0 and dense["fid_vs_dense"] == 0.0
    assert thr["images"] == 6 and thr["psnr"]["n"] + thr["identical_images"] == 6 and thr["fid_vs_dense"] > 0
    assert dense["accuracy"]["n"] == 6 and local["reference_count"] == 4 and math.isfinite(thr["fid_vs_reference"])
    rows = pd.read_parquet(tmp_path / "local" / "campaign.parquet")
    assert len(rows) == 12 and sorted(set(rows["seed"])) == [2, 3, 101, 102, 107, 108]
    assert (tmp_path / "local" / "campaign" / "threshold_0.01" / "000005.png").exists()

    cfg = ProfileConfig(model="digits", steps=2, guidance=4.0, mode="measured", trace_ops=False).resolved()
    campaign = Campaign(cfg, (("threshold_0.01", "threshold=0.01", 1),),
                        {"renormalize": True, "block": 64, "rank": 8}, str(tmp_path / "ray"), None, str(detector), True)
    items = [{"index": int(r.index), "prompt": r.prompt, "seed": int(r.seed)}
             for r in rows[rows["setting"] == "dense"].itertuples()]
    remote = run_chunks(campaign, chunks_of(items, 4), Executor(kind="ray"), lambda *a: None)
    assert [r["setting"] for r in remote] == ["dense"] * 4 + ["threshold_0.01"] * 4 + ["dense"] * 2 + [
        "threshold_0.01"] * 2
    got = pd.DataFrame([{k: v for k, v in r.items() if k != "features"} for r in remote])
    pd.testing.assert_frame_equal(got[rows.columns], rows, check_dtype=False)
    assert [{k: v for k, v in s.items() if k != "fid_vs_reference"} for s in summarize(remote, campaign, None)] == \
        [{k: v for k, v in s.items() if k != "fid_vs_reference"} for s in local["settings"]]
