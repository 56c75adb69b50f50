"""Model families (models/families): every embedded model has one, what a family declares is what its pipeline is
built of, and the run folder says which family and denoiser kind a run had."""

import json

import pytest

import diffprobe
from diffprobe.errors import DiffprobeError
from diffprobe.models.families import ROLES, families, family_of, get_family
from diffprobe.models.registry import list_models

ROLES_OF_CLASSES = tuple(r for r in ROLES if r not in ("linear_attention_processor", "rope_function"))


def _built(name):
    from diffprobe.models.registry import get_spec
    from diffprobe.run.pipeline import build_pipeline
    from diffprobe.run.profile import ProfileConfig

    return build_pipeline(ProfileConfig(model=name, mode="analytic").resolved(), get_spec(name))


def test_every_model_has_the_family_of_its_pipeline():
    for spec in list_models():
        assert spec.pipeline_class in spec.family.pipelines, spec.name
        assert spec.family.denoiser_kind == spec.denoiser, spec.name
    assert {s.family.name for s in list_models()} == set(families())  # no family without a model


@pytest.mark.parametrize("name", sorted(families()))
def test_a_familys_declared_classes_are_what_its_tiny_model_is_built_of(name):
    """A renamed diffusers or transformers class fails here, not silently in the account."""
    fam = get_family(name)
    # its tiny variants, or (SDXL, which borrows SD's) its smallest model, on meta
    mine = [s for s in list_models() if s.family is fam]
    models = [s.name for s in mine if s.name.startswith("tiny")] or [min(mine, key=lambda s: s.native_resolution).name]
    classes, processors = set(), set()
    for model in models:
        pipe = _built(model)
        assert family_of(pipe) is fam
        for comp in pipe.components.values():
            if hasattr(comp, "named_modules"):
                for _, m in comp.named_modules():
                    classes.add(type(m).__name__)
                    processors.add(type(getattr(m, "processor", None)).__name__)
    for role in ROLES_OF_CLASSES:
        missing = set(fam.modules.get(role, ())) - classes
        assert not missing, (name, role, missing)
    assert not set(fam.modules.get("linear_attention_processor", ())) - processors


def test_an_unknown_pipeline_is_one_sentence():
    class OtherPipeline:
        pass

    with pytest.raises(DiffprobeError, match="knows no model family of OtherPipeline"):
        family_of(OtherPipeline())


@pytest.mark.parametrize("model, family, kind", [("tiny", "sd", "unet"), ("tiny-flux", "flux", "transformer")])
def test_run_json_names_the_family_and_denoiser_kind(tmp_path, model, family, kind):
    diffprobe.profile(model=model, steps=1, mode="analytic", out=str(tmp_path))
    d = json.loads((tmp_path / "run.json").read_text())
    assert (d["family"], d["denoiser_kind"]) == (family, kind)
