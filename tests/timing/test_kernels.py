"""The profiler join: device time to the traced calls that launched it, on synthetic event lists with known answers
and on the real profiler (CPU op events)."""

import math

import pytest

import diffprobe
from diffprobe.records.schema import OpRecord
from diffprobe.timing.kernels import MARKER, Event, busy_seconds, fill, join


def _marker(first, start, end):
    return Event("marker", f"{MARKER}{first}", start, end)


def _op(corr, start, end=None):
    return Event("op", "aten::x", start, end if end is not None else start + 1, corr, 0)


def _dev(linked, start, end, kind="kernel"):
    return Event(kind, "k", start, end, 0, linked)


def test_kernels_go_to_the_marker_whose_interval_holds_their_op():
    events = [_marker(0, 0, 100), _op(1, 10), _dev(1, 500, 550),  # a kernel long after its launch: still call 0
              _marker(1, 200, 300), _op(2, 210), _dev(2, 600, 640), _dev(2, 640, 700),  # one op, two kernels
              _op(3, 400), _dev(3, 800, 900)]  # an op outside every marker
    r = join(events)
    assert r.seconds == {0: 50e-9, 1: 100e-9}
    assert r.outside_s == pytest.approx(100e-9) and r.device_s == pytest.approx(250e-9)
    assert r.first_start_ns == {0: 500, 1: 600} and r.markers == 2


def test_nested_ops_and_the_innermost_marker():
    # a call's op launches a nested op; a marker inside another marker takes the ops that start inside it
    events = [_marker(7, 0, 1000), _marker(8, 100, 200), _op(1, 150), _op(2, 160), _dev(2, 300, 310),
              _op(3, 500), _dev(3, 320, 350)]
    r = join(events)
    assert r.seconds == {8: pytest.approx(10e-9), 7: pytest.approx(30e-9)}


def test_memcpy_and_memset_count_as_device_work():
    events = [_marker(0, 0, 10), _op(1, 1), _dev(1, 20, 30, "gpu_memcpy"), _dev(1, 30, 35, "gpu_memset")]
    assert join(events).seconds == {0: pytest.approx(15e-9)}


def test_busy_time_is_the_union_of_device_intervals():
    assert busy_seconds([(0, 10), (5, 20), (30, 40), (32, 35)]) == pytest.approx(30e-9)


def test_without_device_events_a_call_takes_its_markers_time():
    r = join([_marker(0, 100, 350), _op(1, 110), _marker(1, 400, 420)])
    assert r.seconds == {0: pytest.approx(250e-9), 1: pytest.approx(20e-9)} and r.outside_s == 0


def _record(i, flops):
    return OpRecord(i, "sdpa", "", "unet", 0, "m", "", 0, "attn_score", "self", "", [], [], "float32", flops, 0, 0,
                    0, 0, 0, math.nan, math.nan, False, False)


def test_a_fused_call_is_split_over_its_records_by_flops():
    rows = [_record(0, 10), _record(1, 20), _record(2, 70), _record(3, 5)]
    r = join([_marker(0, 1_000, 2_000), _op(1, 1_010), _dev(1, 3_000, 1_003_000),
              _marker(3, 5_000, 6_000), _op(2, 5_010)])  # call 3 launched nothing (a view): 0 s
    fill(rows, {0: 3, 3: 1}, r, origin_ns=1_000)
    assert [x.time_s for x in rows] == pytest.approx([1e-4, 2e-4, 7e-4, 0.0])
    assert [x.time_apportioned for x in rows] == [True, True, True, False]
    assert rows[0].start_s == pytest.approx(2e-6) and rows[1].start_s == pytest.approx(2e-6 + 1e-4)


def test_real_profiler_one_marker_per_call_and_times_add_up(tmp_path, monkeypatch):
    # tiny on the CPU with the profiler timer: every call the tracer handled got exactly one marker, and the
    # per-record times add up to the markers' total
    from diffprobe.timing import kernels

    seen = {}
    real_fill = kernels.fill

    def spy(rows, calls, result, origin_ns):
        seen.update(calls=dict(calls), result=result)
        real_fill(rows, calls, result, origin_ns)

    monkeypatch.setattr(kernels, "fill", spy)
    r = diffprobe.profile(model="tiny", steps=1, sample_steps=0, op_timer="profiler", out=str(tmp_path))
    calls, result = seen["calls"], seen["result"]
    assert result.markers == len(calls) == r.ops["index"].isin(list(calls)).sum()
    assert sum(calls.values()) == len(r.ops)  # every record belongs to exactly one call
    assert r.ops["time_s"].sum() == pytest.approx(sum(result.seconds.values()), rel=1e-9)
    d = r.to_dict()
    assert (r.ops["time_s"] >= 0).all() and d["op_timer"]["markers"] == len(calls)
    assert d["seconds"]["source"] == "profiler: CPU op events" and "gpu_busy_s" not in d["seconds"]


def test_busy_time_per_stage_from_the_calls_device_intervals():
    from diffprobe.timing.kernels import ProfilerTimer

    rows = [_record(0, 1)._replace(stage="denoiser"), _record(1, 1)._replace(stage="vae_decoder")]
    events = [_marker(0, 0, 10), _op(1, 1), _dev(1, 100, 200), _dev(1, 150, 250),
              _marker(1, 20, 30), _op(2, 21), _dev(2, 300, 340)]
    timer = ProfilerTimer("cpu")
    timer.calls = {0: 1, 1: 1}
    timer.fill_from(rows, events)
    assert timer.summary["busy_by_stage"] == {"denoiser": pytest.approx(150e-9), "vae_decoder": pytest.approx(40e-9)}
    assert rows[0].time_s == pytest.approx(200e-9)  # kernel durations add up; overlap counts once only in busy
