import json

import pytest
import torch

from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import build_components, count_params, get_spec, list_models
from tests.reference import params as ref

# Parameter counts of the published checkpoints (diffusers format), per component.
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd21": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sd21-base": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
             "text_encoder_2": 694_659_840},
}

SD_LEVELS = dict(channels=[320, 640, 1280, 1280], attn_levels=[1, 1, 1, 0])
# The same counts derived from layer shapes alone.
DERIVED = {
    "sd15": {"unet": ref.unet(ctx=768, **SD_LEVELS), "vae": ref.vae(), "text_encoder": ref.clip_text(768, 3072, 12)},
    "sd21": {"unet": ref.unet(ctx=1024, **SD_LEVELS), "vae": ref.vae(),
             "text_encoder": ref.clip_text(1024, 4096, 23)},
    "sdxl": {"unet": ref.unet([320, 640, 1280], [0, 1, 1], 2048, depth=[1, 2, 10], add_embed_in=2816),
             "vae": ref.vae(), "text_encoder": ref.clip_text(768, 3072, 12),
             "text_encoder_2": ref.clip_text(1280, 5120, 32, projection=1280)},
}
DERIVED["sd21-base"] = DERIVED["sd21"]


def test_shape_derivation_matches_published_counts():
    # guards the reference itself: two independent sources agree
    assert DERIVED == PUBLISHED


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_embedded_architectures_have_published_parameter_counts(name):
    comps = build_components(get_spec(name), "meta")
    got = {k: count_params(v) for k, v in comps.items() if isinstance(v, torch.nn.Module)}
    assert got == PUBLISHED[name]
    assert all(p.is_meta for v in comps.values() if isinstance(v, torch.nn.Module) for p in v.parameters())


def test_tiny_matches_its_shape_derivation():
    comps = build_components(get_spec("tiny"), "meta")
    assert count_params(comps["unet"]) == ref.unet([32, 64, 64, 64], [1, 1, 1, 0], ctx=32, layers=1)
    assert count_params(comps["vae"]) == ref.vae((16, 32, 32, 32), layers=1)
    assert count_params(comps["text_encoder"]) == ref.clip_text(32, 64, 2)


def test_registry_lists_every_required_model():
    assert {"sd15", "sd21", "sd21-base", "sdxl", "tiny"} <= {s.name for s in list_models()}
    assert get_spec("sd21").native_resolution == 768
    assert get_spec("sd21").config("scheduler")["prediction_type"] == "v_prediction"
    assert get_spec("sdxl").text_encoders == ("text_encoder", "text_encoder_2")


def test_unknown_model_lists_known_ones():
    with pytest.raises(DiffprobeError, match="known models: .*sd15.*tiny"):
        get_spec("sd3")


def test_random_weights_are_seeded():
    spec = get_spec("tiny")
    a = build_components(spec, "random", seed=1)["unet"].conv_in.weight
    b = build_components(spec, "random", seed=1)["unet"].conv_in.weight
    c = build_components(spec, "random", seed=2)["unet"].conv_in.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_embedded_configs_load_with_real_diffusers_classes():
    import diffusers
    import transformers

    comps = build_components(get_spec("sdxl"), "meta")
    assert isinstance(comps["unet"], diffusers.UNet2DConditionModel)
    assert isinstance(comps["vae"], diffusers.AutoencoderKL)
    assert isinstance(comps["text_encoder_2"], transformers.CLIPTextModelWithProjection)
    assert isinstance(comps["scheduler"], diffusers.EulerDiscreteScheduler)
    assert json.loads(get_spec("sdxl").folder.joinpath("model_index.json").read_text())["_class_name"] == (
        "StableDiffusionXLPipeline")


@pytest.mark.parametrize("small, parent, changed", [
    ("small-pixart", "pixart-alpha", {"text_encoder": {"num_layers": 2, "num_decoder_layers": 2}}),
    ("small-flux", "flux-schnell", {"text_encoder_2": {"num_layers": 2, "num_decoder_layers": 2},
                                    "transformer": {"num_layers": 1, "num_single_layers": 2}}),
])
def test_small_variants_are_their_published_model_with_fewer_layers(small, parent, changed):
    """A small variant (benchmarks/predict.py's DiTs at full widths) is its published model's configs with only the
    layer counts cut, and the parameters that follow: T5-XXL's embedding plus 2 of its 24 identical layers, FLUX's
    1 of 19 double and 2 of 38 single blocks."""
    s, p = get_spec(small), get_spec(parent)
    assert s.components == p.components and s.pipeline_class == p.pipeline_class
    for comp in s.components:
        want = {**p.config(comp), **changed.get(comp, {})}
        assert s.config(comp) == want, comp
    small_params = {c: count_params(m) for c, m in build_components(s, "meta").items() if hasattr(m, "parameters")}
    full = {c: count_params(m) for c, m in build_components(p, "meta").items() if hasattr(m, "parameters")}
    t5 = "text_encoder" if small == "small-pixart" else "text_encoder_2"
    d, ff, vocab = 4096, 10240, 32128  # T5-XXL: d_model, gated FFN width, vocabulary
    layer = 4 * d * d + 3 * d * ff + 2 * d  # attention q, k, v, o; FFN wi_0, wi_1, wo; two RMSNorm weights
    assert full[t5] - small_params[t5] == 22 * layer
    assert small_params[t5] == vocab * d + 2 * layer + d + 32 * 64  # embedding, layers, final norm, relative bias
