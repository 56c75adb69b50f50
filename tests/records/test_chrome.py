"""The Chrome / Perfetto trace of a measured run: every timed op once, in order, inside its stage slice."""

import json

import pytest

from diffprobe.errors import DiffprobeError
from diffprobe.run.profile import ProfileConfig, run_profile


def test_chrome_trace_holds_every_timed_op_in_order(tmp_path):
    r = run_profile(ProfileConfig(model="tiny", steps=2, sample_steps=0, chrome_trace=True, out=str(tmp_path)))
    assert r.to_dict()["chrome_trace"] == "trace.json"
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    ops = [e for e in events if e["ph"] == "X" and e["tid"] == 2]
    stages = [e for e in events if e["ph"] == "X" and e["tid"] == 1]
    assert len(ops) == len(r.ops)
    # ops are sequential on the CPU: each starts after the previous one ended (sdpa parts share one kernel)
    for prev, cur in zip(ops, ops[1:], strict=False):
        assert cur["ts"] >= prev["ts"] + prev["dur"] - 1e-3
    # the traced span fits inside the measured pipeline call
    span = (ops[-1]["ts"] + ops[-1]["dur"] - ops[0]["ts"]) / 1e6
    assert 0 < span <= r.stages["total"]
    # two UNet evaluations, each one slice that contains exactly its ops
    unet = [s for s in stages if s["name"].startswith("unet step")]
    assert [s["name"] for s in unet] == ["unet step 0", "unet step 1"]
    for s in unet:
        inside = [o for o in ops if o["cat"] == "unet" and s["ts"] <= o["ts"] < s["ts"] + s["dur"] + 1e-3]
        assert sum(o["args"]["flops"] for o in inside) == s["args"]["flops"] > 0
    assert {"conv", "attn_score", "attn_softmax", "attn_pv"} <= {o["name"] for o in ops}


def test_chrome_trace_needs_a_traced_measured_run():
    with pytest.raises(DiffprobeError, match="--chrome-trace"):
        ProfileConfig(model="tiny", mode="analytic", chrome_trace=True).resolved()
