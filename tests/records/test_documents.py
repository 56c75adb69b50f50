"""The typed documents: what a run writes reads back as the same document; a damaged, foreign or older one is one
sentence; the schema-4 names (``denoiser_*``, ``*_share_saved`` fractions, ``*_flops_saved`` FLOPs)."""

import json

import pytest

import diffprobe
from diffprobe.cli import main
from diffprobe.errors import DiffprobeError
from diffprobe.records.documents import RunDocument, SweepDocument, read_document
from diffprobe.records.runfolder import read_result


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    diffprobe.profile(model="tiny", steps=2, mode="analytic", out=str(folder))
    return folder


def test_run_json_reads_back_as_the_document_it_was(run_folder):
    raw = json.loads((run_folder / "run.json").read_text())
    kind, doc = read_result(run_folder)
    assert kind == "profile" and isinstance(doc, RunDocument)
    assert json.loads(json.dumps(doc.to_json())) == raw  # every key, in the same form
    assert list(raw)[:2] == ["schema_version", "kind"] and raw["schema_version"] == 4
    # fields by attribute, and the mapping of the JSON form alike; an optional field left out while None
    # (CFG runs both branches in one batch: one evaluation per step)
    assert doc.params == doc["params"] == raw["params"] and doc.denoiser_evals == raw["denoiser_evals"] == 2
    assert doc.approx is None and "approx" not in doc and "approx" not in raw and doc.get("approx") is None
    assert not any(k.startswith("unet") for k in raw)  # schema 4: the denoiser's keys are denoiser_*


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(height="64"), "field 'height' is str, expected int"),
    (lambda d: d.pop("stages"), "lacks the field 'stages'"),
    (lambda d: d.update(unet_evals=4), "does not declare: unet_evals"),
    (lambda d: d.update(schema_version=3), "has schema version 3; this diffprobe reads version 4"),
    (lambda d: d.update(kind="sweep"), "does not declare"),
])
def test_a_damaged_or_older_run_json_is_one_sentence(run_folder, tmp_path, capsys, change, message):
    data = json.loads((run_folder / "run.json").read_text())
    change(data)
    (tmp_path / "run.json").write_text(json.dumps(data))
    with pytest.raises(DiffprobeError, match=message):
        read_document(tmp_path / "run.json")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message.split(" ")[0] in err


def test_a_document_of_another_kind_is_refused_by_name(run_folder):
    with pytest.raises(DiffprobeError, match="holds a profile document, not sweep"):
        read_document(run_folder / "run.json", SweepDocument)


def test_a_writer_cannot_add_an_undeclared_key():
    state = {"config": {}, "model": "tiny", "mode": "analytic", "hardware": None, "random_weights": True,
             "points": {}, "wall_seconds": 1.0}
    with pytest.raises(DiffprobeError, match="does not declare: wall_seconds"):
        SweepDocument.from_fields(state)
    del state["wall_seconds"]
    doc = SweepDocument.from_fields(state)  # a sweep's first save: no status or findings yet, and none written
    assert doc.to_json() == {"schema_version": 4, "kind": "sweep", **state}
