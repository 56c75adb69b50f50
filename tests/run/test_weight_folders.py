"""The user's weights: safetensors before pickle, one-line errors for mismatched or incomplete folders, the
hub cache layout."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffprobe
from diffprobe.cli import main
from diffprobe.models.registry import build_components, get_spec, pipeline_from_components
from tests.cli_checks import one_line_error as _one_line_error

TINY = ["--model", "tiny", "--steps", "1", "-q"]


@pytest.fixture(scope="module")
def weight_folders(tmp_path_factory):
    """tiny saved three ways: safetensors only, pickle (.bin) only, and both (different weights in each)."""
    root = tmp_path_factory.mktemp("weights")
    spec = get_spec("tiny")
    safe = pipeline_from_components(spec, build_components(spec, "random", seed=1))
    other = pipeline_from_components(spec, build_components(spec, "random", seed=2))
    safe.save_pretrained(str(root / "safe"))
    safe.save_pretrained(str(root / "pickle"), safe_serialization=False)
    other.save_pretrained(str(root / "both"), safe_serialization=False)  # .bin files of other values ...
    safe.save_pretrained(str(root / "both"))  # ... beside the safetensors (transformers writes safetensors anyway)
    return root


def _image(folder: Path) -> np.ndarray:
    return np.asarray(Image.open(folder / "image.png"))


@pytest.mark.slow
def test_safetensors_win_over_pickle_with_allow_pickle(weight_folders, tmp_path):
    run = dict(model="tiny", steps=1, sample_steps=0, seed=1)
    diffprobe.profile(weights=str(weight_folders / "safe"), out=str(tmp_path / "safe"), **run)
    diffprobe.profile(weights=str(weight_folders / "both"), allow_pickle=True, out=str(tmp_path / "both"), **run)
    diffprobe.profile(weights=str(weight_folders / "safe"), allow_pickle=True, out=str(tmp_path / "safe_flag"), **run)
    assert np.array_equal(_image(tmp_path / "safe"), _image(tmp_path / "both"))
    assert np.array_equal(_image(tmp_path / "safe"), _image(tmp_path / "safe_flag"))


@pytest.mark.slow
def test_pickle_only_folder_needs_the_flag_and_then_loads(weight_folders, tmp_path, capsys):
    _one_line_error(capsys, ["profile", *TINY, "--weights", str(weight_folders / "pickle"), "--out",
                             str(tmp_path / "no")], "--allow-pickle")
    r = diffprobe.profile(model="tiny", steps=1, sample_steps=0, seed=1, weights=str(weight_folders / "pickle"),
                          allow_pickle=True, out=str(tmp_path / "yes"))
    diffprobe.profile(model="tiny", steps=1, sample_steps=0, seed=1, weights=str(weight_folders / "safe"),
                      out=str(tmp_path / "safe"))
    assert r.status == "ok" and np.array_equal(_image(tmp_path / "yes"), _image(tmp_path / "safe"))


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_model_and_weights_must_match(model, weight_folders, tmp_path, capsys):
    err = _one_line_error(capsys, ["profile", "--model", model, "--steps", "1", "-q", "--weights",
                                   str(weight_folders / "safe"), "--out", str(tmp_path / "o")], model)
    assert "tiny" in err  # the folder's own architecture is named


def test_measured_sweep_with_mismatched_weights_is_refused_before_any_point(weight_folders, tmp_path, capsys):
    _one_line_error(capsys, ["sweep", "--model", "sd15", "--mode", "measured", "--resolutions", "64", "--weights",
                             str(weight_folders / "safe"), "--out", str(tmp_path / "s"), "-q"], "tiny")
    assert not (tmp_path / "s" / "points").exists()


@pytest.mark.slow
def test_weight_loading_is_quiet(weight_folders, tmp_path, capfd):
    assert main(["profile", *TINY, "--weights", str(weight_folders / "safe"), "--out", str(tmp_path / "o")]) == 0
    err = capfd.readouterr().err
    assert "Loading pipeline components" not in err and "FutureWarning" not in err and "deprecated" not in err


def test_weight_errors_are_one_line(weight_folders, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(weight_folders / "safe", broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    _one_line_error(capsys, ["profile", *TINY, "--weights", str(broken), "--out", str(tmp_path / "o")],
                    "could not load weights")


def test_folder_without_unet_names_it(weight_folders, tmp_path, capsys):
    import shutil

    folder = tmp_path / "nounet"
    shutil.copytree(weight_folders / "safe", folder)
    shutil.rmtree(folder / "unet")
    _one_line_error(capsys, ["profile", *TINY, "--weights", str(folder), "--out", str(tmp_path / "o")], "unet/")


def test_hub_cache_root_resolves_to_its_snapshot(weight_folders, tmp_path):
    import shutil

    root = tmp_path / "models--org--tiny"
    shutil.copytree(weight_folders / "safe", root / "snapshots" / "abc123")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("abc123")
    r = diffprobe.profile(model="tiny", steps=1, weights=str(root), out=str(tmp_path / "o"))
    assert r.config.weights.endswith("snapshots/abc123")
