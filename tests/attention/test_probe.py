"""The sparsity probe: the run is unchanged, statistics land per layer × head × step, bad input refused."""

import json

import numpy as np
import pytest
import torch

from diffprobe.attention.core import installed
from diffprobe.attention.probe import SparsityConfig, SparsityProbe
from diffprobe.cli import main
from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import get_spec
from diffprobe.run.profile import ProfileConfig, build_pipeline, pipeline_kwargs


def test_probe_leaves_the_image_unchanged_and_sees_every_call():
    cfg = ProfileConfig(model="tiny", steps=2, out="/tmp/unused").resolved()
    pipe = build_pipeline(cfg, get_spec("tiny"))
    with torch.inference_mode():
        plain = pipe(**pipeline_kwargs(cfg, pipe)).images
        probe = SparsityProbe(SparsityConfig(blocks=(16,)))
        with installed(pipe.unet, probe.core):
            probed = pipe(**pipeline_kwargs(cfg, pipe)).images
        again = pipe(**pipeline_kwargs(cfg, pipe)).images  # processors restored
    assert torch.equal(plain, probed) and torch.equal(plain, again)
    n_layers = len(pipe.unet.attn_processors)
    heads = {r["layer"]: r["head"] for r in probe.rows}
    assert len(heads) == n_layers
    evals = 2 * 1  # 2 steps, CFG batched into one UNet call per step
    assert len(probe.rows) == evals * sum(m.heads for m in pipe.unet.modules() if type(m).__name__ == "Attention")
    assert {r["attn_kind"] for r in probe.rows} == {"self", "cross"}
    assert all(0 <= r["entropy"] <= 1 + 1e-6 for r in probe.rows)


def test_model_without_attention_is_refused():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), mid_block_type=None, layers_per_block=1,
                                norm_num_groups=4, cross_attention_dim=8, sample_size=8)
    with pytest.raises(DiffprobeError, match="no attention layers"):
        with installed(unet, lambda *a: None):
            pass


@pytest.mark.slow
def test_sparsity_command_json(tmp_path, capsys):
    assert main(["sparsity", "--model", "tiny", "--steps", "2", "--resolutions", "64,128", "--blocks", "16",
                 "--out", str(tmp_path / "s"), "--format", "json", "-q"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["summary"]) == {"64x64", "128x128"} and d["random_weights"] and "near-uniform" in d["note"]
    import pandas as pd

    table = pd.read_parquet(tmp_path / "s" / "sparsity.parquet")
    assert set(table["height"]) == {64, 128} and (table["keys_frac_0.9"] <= 1).all()
    # the summary is the mean of the table
    sub = table[(table["height"] == 64) & (table["attn_kind"] == "self")]
    assert d["summary"]["64x64"]["by_kind"]["self"]["entropy"] == pytest.approx(float(np.mean(sub["entropy"])))
    assert (tmp_path / "s" / "report.html").exists()


@pytest.mark.parametrize("argv, message", [
    (["--eps", "1.5"], "outside [0, 1)"), (["--tau", "0"], "outside (0, 1]"), (["--blocks", "0"], "at least 1"),
    (["--eps", "x"], "cannot parse --eps"), (["--model", "sd9"], "unknown model"),
])
def test_sparsity_bad_input(argv, message, tmp_path, capsys):
    assert main(["sparsity", "--model", "tiny", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.slow
def test_sparsity_resumes_and_refuses_another_configuration(tmp_path, monkeypatch, capsys):
    import diffprobe.run.sparsity as probe_mod  # the run that uses the probe

    argv = ["sparsity", "--model", "tiny", "--steps", "2", "--resolutions", "64,128", "--blocks", "16",
            "--out", str(tmp_path / "s"), "-q", "--format", "json"]
    real = probe_mod.SparsityProbe
    made = []

    def counting(sc, grid=None):
        made.append(1)
        if len(made) == 2:
            raise KeyboardInterrupt  # killed while starting the second resolution
        return real(sc, grid)

    monkeypatch.setattr(probe_mod, "SparsityProbe", counting)
    assert main(argv) == 130  # the CLI reports an interrupt as "interrupted", exit 130
    assert (tmp_path / "s" / "points" / "64x64" / "sparsity.parquet").exists()
    assert not (tmp_path / "s" / "points" / "128x128").exists()
    capsys.readouterr()
    again = []
    monkeypatch.setattr(probe_mod, "SparsityProbe", lambda sc, grid=None: (again.append(sc), real(sc, grid))[1])
    assert main(argv) == 0
    assert len(again) == 1  # only 128 px was probed: 64 px was kept
    d = json.loads(capsys.readouterr().out)
    assert set(d["summary"]) == {"64x64", "128x128"} and d["complete"]
    argv[argv.index("--steps") + 1] = "3"
    assert main(argv) == 2
    assert "another configuration" in capsys.readouterr().err
