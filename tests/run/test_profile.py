import json

import numpy as np
import pytest
import torch
from PIL import Image

import diffprobe
from diffprobe.errors import DiffprobeError
from diffprobe.records.schema import SCHEMA_VERSION
from diffprobe.run.profile import ProfileConfig, build_pipeline, run_profile

TINY = dict(model="tiny", steps=3, sample_steps=0, prompt="a red cube")


def test_full_profile_run_writes_results_and_image(tmp_path):
    result = diffprobe.profile(out=str(tmp_path), **TINY)
    d = result.to_dict()
    for key in ("model", "height", "width", "steps", "device", "dtype", "params", "stages", "peak_memory_bytes"):
        assert key in d
    assert (d["model"], d["height"], d["width"], d["steps"], d["device"], d["dtype"]) == (
        "tiny", 64, 64, 3, "cpu", "float32")
    assert set(d["params"]) == {"text_encoder", "unet", "vae"}
    assert {"tokenize", "text_encoder", "denoiser", "scheduler", "vae_decoder", "other", "total"} <= set(d["stages"])
    parts = sum(v for k, v in d["stages"].items() if k != "total")
    assert parts == pytest.approx(d["stages"]["total"], rel=1e-6)  # "other" closes the account
    assert len(d["step_times"]) == 3 and d["denoiser_evals_measured"] == 3 and d["projection"] is None
    assert d["random_weights"] and "architecture-only" in d["note"]
    assert d["peak_memory_bytes"] > 10 * 2**20
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["stages"] == d["stages"] and saved["schema_version"] == SCHEMA_VERSION
    assert Image.open(tmp_path / "image.png").size == (64, 64)


def test_instrumentation_does_not_change_the_image(tmp_path):
    cfg = ProfileConfig(out=str(tmp_path), **TINY).resolved()
    run_profile(cfg)  # stage timer + op tracer
    pipe = build_pipeline(cfg, diffprobe.models.registry.get_spec("tiny"))
    with torch.inference_mode():  # the call a user makes: the pipeline draws its own noise, returns PIL
        plain = pipe(prompt=cfg.prompt, height=64, width=64, num_inference_steps=cfg.steps, guidance_scale=7.5,
                     generator=torch.Generator("cpu").manual_seed(cfg.seed), output_type="pil").images[0]
    assert np.array_equal(np.asarray(plain), np.asarray(Image.open(tmp_path / "image.png")))


def test_sampled_steps_give_a_labelled_projection(tmp_path):
    d = diffprobe.profile(model="tiny", steps=6, sample_steps=2, out=str(tmp_path)).to_dict()
    assert d["denoiser_evals"] == 6 and d["denoiser_evals_measured"] == 2 and len(d["step_times"]) == 2
    proj = d["projection"]
    assert "not a measurement" in proj["label"]
    median_step = float(np.median([s["denoiser_s"] for s in d["step_times"]]))
    assert proj["stages"]["denoiser"] == pytest.approx(6 * median_step)
    assert d["image_complete"] is False


def test_repeat_and_warmup_report_median_min_max(tmp_path):
    d = diffprobe.profile(repeat=3, warmup=1, out=str(tmp_path), **TINY).to_dict()
    stats = d["stage_stats"]["denoiser"]
    assert stats["runs"] == 3 and stats["min"] <= stats["median"] <= stats["max"]


def test_no_cfg_with_guidance_one_halves_the_unet_batch(tmp_path):
    seen = []
    cfg = ProfileConfig(out=str(tmp_path), guidance=1.0, batch=2, **TINY).resolved()
    pipe = build_pipeline(cfg, diffprobe.models.registry.get_spec("tiny"))
    pipe.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    d = run_profile(cfg, pipe=pipe).to_dict()
    assert d["cfg"] is False and seen == [2, 2, 2]


def test_out_of_memory_names_the_stage_and_keeps_measurements(tmp_path):
    cfg = ProfileConfig(out=str(tmp_path), **TINY).resolved()
    pipe = build_pipeline(cfg, diffprobe.models.registry.get_spec("tiny"))

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    pipe.vae.decode = boom
    with pytest.raises(DiffprobeError, match="out of memory in stage vae_decoder.*smaller"):
        run_profile(cfg, pipe=pipe)
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["status"] == "failed" and "vae_decoder" in saved["error"]
    assert len(saved["step_times"]) == 3 and saved["stages"]["denoiser"] > 0  # what was measured is kept


@pytest.mark.parametrize("field, value, message", [
    ("height", 60, "multiple of 8"),
    ("width", 8, "minimum"),
    ("steps", 0, "--steps must be at least 1"),
    ("batch", 0, "--batch must be at least 1"),
    ("model", "nope", "known models"),
    ("dtype", "float8", "unknown dtype"),
    ("device", "tpu", "unknown device"),
])
def test_bad_config_is_refused(field, value, message):
    with pytest.raises(DiffprobeError, match=message):
        ProfileConfig(**{**TINY, field: value}).resolved()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_refused():
    with pytest.raises(DiffprobeError, match="no CUDA GPU"):
        ProfileConfig(device="cuda", **TINY).resolved()
