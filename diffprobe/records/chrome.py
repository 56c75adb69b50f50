"""Chrome / Perfetto trace of a measured run: one slice per timed op, plus one slice per stage and step.

Open ``trace.json`` in https://ui.perfetto.dev or ``chrome://tracing``. Thread 1 holds the stage/step slices
(``denoiser step 3``, ``vae_decoder``), thread 2 the ops, named by layer type with the ATen op, module path, shapes,
FLOPs and bytes in their arguments. With kernel times (``--op-timer profiler`` on CUDA), thread 3 is the GPU: one
slice per kernel, memcpy or memset, linked by a flow arrow from the op that launched it. Times are microseconds
from the start of the traced pipeline call.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffprobe.records.runfolder import atomic_write


def chrome_trace(ops, kernels: list[dict] | None = None) -> dict:
    """The trace-event JSON object for an op table (rows without a measured start are left out) and, optionally,
    device events (``first``: the first record of the call that launched it, ``name``, ``start_s``, ``dur_s``)."""
    timed = ops[ops["start_s"].notna() & ops["time_s"].notna()] if len(ops) else ops
    events: list[dict] = [
        {"ph": "M", "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": "stages"}},
        {"ph": "M", "pid": 1, "tid": 2, "name": "thread_name", "args": {"name": "ops"}},
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "diffprobe"}},
    ]
    if not len(timed):
        return {"traceEvents": events, "displayTimeUnit": "ms"}
    ends = timed["start_s"] + timed["time_s"]
    frame = timed.assign(end_s=ends)
    # consecutive rows of one (stage, step) form one slice
    key = frame["stage"] + "/" + frame["step"].astype(str)
    run_id = (key != key.shift()).cumsum()
    for _, g in frame.groupby(run_id, sort=False):
        stage, step = g["stage"].iloc[0], int(g["step"].iloc[0])
        name = f"{stage} step {step}" if step >= 0 else stage
        t0, t1 = float(g["start_s"].min()), float(g["end_s"].max())
        events.append({"ph": "X", "pid": 1, "tid": 1, "name": name, "cat": "stage", "ts": t0 * 1e6,
                       "dur": max(0.0, t1 - t0) * 1e6, "args": {"flops": int(g["flops"].sum())}})
    for r in frame.itertuples(index=False):
        op = r.op if not r.part else f"{r.op}.{r.part}"
        args = {"op": op, "module": r.module, "level": r.level, "inputs": r.input_shapes,
                "outputs": r.output_shapes, "flops": int(r.flops), "bytes": int(r.bytes_read + r.bytes_written)}
        if r.attn_kind:
            args["attention"] = r.attn_kind
        events.append({"ph": "X", "pid": 1, "tid": 2, "name": r.layer_type, "cat": r.stage,
                       "ts": float(r.start_s) * 1e6, "dur": max(0.0, float(r.time_s)) * 1e6, "args": args})
    if kernels:
        events.append({"ph": "M", "pid": 1, "tid": 3, "name": "thread_name", "args": {"name": "GPU"}})
        starts = dict(zip(frame["index"], frame["start_s"], strict=True))
        for i, k in enumerate(kernels):
            events.append({"ph": "X", "pid": 1, "tid": 3, "name": k["name"], "cat": "kernel",
                           "ts": k["start_s"] * 1e6, "dur": max(0.0, k["dur_s"]) * 1e6,
                           "args": {"record": int(k["first"])}})
            if k["first"] in starts:  # a flow arrow from the op's slice to its kernel
                events.append({"ph": "s", "pid": 1, "tid": 2, "id": i, "name": "launch", "cat": "launch",
                               "ts": float(starts[k["first"]]) * 1e6})
                events.append({"ph": "f", "bp": "e", "pid": 1, "tid": 3, "id": i, "name": "launch", "cat": "launch",
                               "ts": k["start_s"] * 1e6})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(path: Path, ops, kernels: list[dict] | None = None) -> Path:
    """Write :func:`chrome_trace` of ``ops`` (and ``kernels``) to ``path`` (atomically) and return the path."""
    data = chrome_trace(ops, kernels)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, allow_nan=False)

    return atomic_write(path, write)

