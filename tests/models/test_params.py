"""``diffprobe models --params-by-module``: parameters per component, top-level module and role, each summing to
the component's total; hand counts from layer shapes for the tiny UNet's ends and the CLIP embeddings."""

import json

from diffprobe.cli import main
from diffprobe.models.params import params_by_module
from diffprobe.models.registry import build_components, count_params, get_spec
from tests.reference import params as ref


def test_every_breakdown_sums_to_the_component_and_hand_counts_hold():
    spec = get_spec("tiny")
    got = params_by_module(spec)
    for name, comp in build_components(spec, "meta").items():
        if hasattr(comp, "parameters"):
            n = count_params(comp)
            assert got[name]["total"] == sum(got[name]["by_module"].values()) == sum(got[name]["by_role"].values()) == n
    unet = got["unet"]["by_module"]
    assert unet["conv_in"] == ref.conv(4, 32, 3) and unet["conv_out"] == ref.conv(32, 4, 3)
    assert got["text_encoder"]["by_role"]["embed"] == 49408 * 32 + 77 * 32  # token and position tables


def test_a_dit_s_modulation_and_attention_are_their_own_roles():
    got = params_by_module(get_spec("tiny-z-image"))["transformer"]["by_role"]
    # the adaLN linears (path role): 4D per modulated block (2 main layers + 1 noise refiner), 1D in the final layer,
    # each from the 32-wide timestep embedding, with bias
    assert got["modulation"] == 3 * ref.linear(32, 4 * 32) + ref.linear(32, 32)
    # q, k, v, out (no bias) and the per-head qk norms of 4 attention layers (2 main, 1 + 1 refiners)
    assert got["attention"] == 4 * (4 * ref.linear(32, 32, False) + 2 * 8)


def test_the_cli_prints_it_and_refuses_an_unknown_model(capsys):
    assert main(["models", "--params-by-module", "tiny", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model"] == "tiny" and set(d["components"]) == {"text_encoder", "unet", "vae"}
    assert main(["models", "--params-by-module", "tiny"]) == 0
    assert "tiny unet: 2.14 M parameters" in capsys.readouterr().out
    assert main(["models", "--params-by-module", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'nope'" in err
