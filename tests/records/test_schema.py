"""The record schema: one typed row builder, the same schema on disk, a version per document, checked on read."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import diffprobe
from diffprobe.cli import main
from diffprobe.errors import DiffprobeError
from diffprobe.records.runfolder import read_ops, read_result
from diffprobe.records.schema import COLUMNS, OPS_ARROW, OPS_VERSION, OpRecord


def test_every_column_has_one_arrow_type():
    assert tuple(OPS_ARROW.names) == COLUMNS == OpRecord._fields
    assert OPS_ARROW.field("flops").type == pa.int64() and OPS_ARROW.field("time_s").type == pa.float64()


def test_shapes_round_trip_as_lists(tmp_path):
    r = diffprobe.profile(model="tiny", steps=1, mode="analytic", out=str(tmp_path))
    back = read_ops(tmp_path)
    assert list(back.columns) == list(COLUMNS)
    conv = back[(back["module"] == "unet.conv_in") & (back["layer_type"] == "conv")].iloc[0]
    # tiny's conv_in at 64 px: the (2, 4, 8, 8) latent batch (CFG doubles it; 64 / 8 = 8), a (32, 4, 3, 3) kernel
    # (block_out_channels[0] = 32, 4 latent channels) and its bias
    assert conv["input_shapes"] == [[2, 4, 8, 8], [32, 4, 3, 3], [32]] and conv["output_shapes"] == [[2, 32, 8, 8]]
    assert back["input_shapes"].tolist() == r.ops["input_shapes"].tolist()


def test_an_older_record_table_is_refused_with_one_line(tmp_path, capsys):
    diffprobe.profile(model="tiny", steps=1, mode="analytic", out=str(tmp_path))
    table = pq.read_table(tmp_path / "ops.parquet")
    pq.write_table(table.replace_schema_metadata({b"diffprobe_schema_version": b"2"}), tmp_path / "ops.parquet")
    with pytest.raises(DiffprobeError, match=f"record schema version 2; this diffprobe reads version {OPS_VERSION}"):
        read_ops(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_each_document_checks_its_own_version(tmp_path):
    diffprobe.profile(model="tiny", steps=1, mode="analytic", out=str(tmp_path))
    run = json.loads((tmp_path / "run.json").read_text())
    assert read_result(tmp_path)[0] == "profile"
    run["schema_version"] = 1
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.raises(DiffprobeError, match="schema version 1"):
        read_result(tmp_path)
