"""``--weights`` with a diffusion transformer pipeline: a ``save_pretrained`` folder (sharded safetensors
included) loads through the real pipeline class and reproduces the run of the weights it holds."""

import json

import numpy as np
import pytest
from PIL import Image

from diffprobe.cli import main
from diffprobe.models.registry import build_components, get_spec, pipeline_from_components


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sana"])
def test_saved_tiny_dit_reproduces_the_run_of_its_weights(tmp_path, capsys, model):
    spec = get_spec(model)
    pipe = pipeline_from_components(spec, build_components(spec, "random", seed=3))
    folder = tmp_path / "weights"
    pipe.save_pretrained(str(folder), max_shard_size="40KB")  # the transformer in several shards
    assert list((folder / "transformer").glob("*.safetensors.index.json"))
    common = ["profile", "--model", model, "--steps", "2", "--sample-steps", "0", "--seed", "3", "-q",
              "--format", "json"]
    assert main([*common, "--weights", str(folder), "--out", str(tmp_path / "w")]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert main([*common, "--out", str(tmp_path / "r")]) == 0
    built = json.loads(capsys.readouterr().out)
    assert loaded["weights"] == str(folder) and built["weights"] == "random"
    assert loaded["params"] == built["params"] and loaded["flops"]["total"] == built["flops"]["total"]
    a = np.asarray(Image.open(tmp_path / "w" / loaded["image"]))
    b = np.asarray(Image.open(tmp_path / "r" / built["image"]))
    assert np.array_equal(a, b)  # the same weights (seed 3) and the same noise: the same image


def test_weights_of_another_transformer_are_refused(tmp_path, capsys):
    spec = get_spec("tiny-sd3")
    folder = tmp_path / "sd3"
    pipeline_from_components(spec, build_components(spec, "random")).save_pretrained(str(folder))
    cfg = folder / "transformer" / "config.json"
    c = json.loads(cfg.read_text())
    c["num_layers"] = 3
    cfg.write_text(json.dumps(c))
    capsys.readouterr()  # saving's own progress bars (shown when no earlier test quietened diffusers) are not ours
    assert main(["profile", "--model", "tiny-sd3", "--weights", str(folder), "--steps", "1", "-q",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "transformer is not tiny-sd3's: num_layers is 3 there, 2 in tiny-sd3" in err and "\n" not in err
    assert main(["profile", "--model", "tiny-flux", "--weights", str(folder), "--steps", "1", "-q",
                 "--out", str(tmp_path / "p")]) == 2
    assert "holds a StableDiffusion3Pipeline, but --model tiny-flux is a FluxPipeline" in capsys.readouterr().err
