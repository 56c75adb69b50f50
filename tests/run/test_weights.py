import numpy as np
import pytest
import torch

import diffprobe
from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import build_components, get_spec, pipeline_from_components


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-weights")
    pipe = pipeline_from_components(get_spec("tiny"), build_components(get_spec("tiny"), "random", seed=123))
    pipe.save_pretrained(str(folder))
    return folder


@pytest.mark.slow
def test_weights_from_a_saved_folder_give_identical_results(saved_tiny, tmp_path):
    run = dict(model="tiny", steps=2, sample_steps=0, seed=123)
    from_disk = diffprobe.profile(weights=str(saved_tiny), out=str(tmp_path / "disk"), **run).to_dict()
    in_memory = diffprobe.profile(out=str(tmp_path / "mem"), **run).to_dict()
    assert from_disk["params"] == in_memory["params"]
    assert from_disk["weights"] == str(saved_tiny) and from_disk["random_weights"] is False
    a = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "disk" / "image.png"))
    b = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "mem" / "image.png"))
    assert np.array_equal(a, b)


def test_corrupt_safetensors_is_one_clear_error(saved_tiny, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved_tiny, broken)
    target = broken / "unet" / "diffusion_pytorch_model.safetensors"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(DiffprobeError, match="could not load weights"):
        diffprobe.profile(model="tiny", steps=1, weights=str(broken), out=str(tmp_path / "o"))


def test_single_corrupt_safetensors_file(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"not a safetensors file")
    with pytest.raises(DiffprobeError, match="could not load weights"):
        diffprobe.profile(model="tiny", steps=1, weights=str(f), out=str(tmp_path / "o"))


@pytest.mark.parametrize("name", ["model.ckpt", "model.bin", "model.pt"])
def test_pickle_checkpoints_need_allow_pickle(tmp_path, name):
    f = tmp_path / name
    torch.save({"x": torch.zeros(1)}, f)
    with pytest.raises(DiffprobeError, match="--allow-pickle"):
        diffprobe.profile(model="tiny", steps=1, weights=str(f), out=str(tmp_path / "o"))


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(DiffprobeError, match="no model_index.json"):
        diffprobe.profile(model="tiny", steps=1, weights=str(tmp_path), out=str(tmp_path / "o"))


def test_missing_weights_path(tmp_path):
    with pytest.raises(DiffprobeError, match="does not exist"):
        diffprobe.profile(model="tiny", steps=1, weights=str(tmp_path / "nope"), out=str(tmp_path / "o"))
