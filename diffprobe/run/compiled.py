"""``--compile``: the same run with the denoiser and the VAE decoder under ``torch.compile``.

Compiled once (timed apart), once under the profiler (each compiled kernel's time attributed to the eager records,
:mod:`diffprobe.timing.compiled`), then timed untraced as configured (the run's stage times). The eager run's stage
and layer-type seconds stay beside, in the ``compiled`` entry of ``run.json``."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace

from diffprobe.models.registry import denoiser_name
from diffprobe.patching import Patches
from diffprobe.records.schema import DENOISER
from diffprobe.run.config import ProfileConfig, seconds_source
from diffprobe.run.passes import Measured, measured_pass

DIVERGE = 1.5  # two runs whose times differ by more than this are flagged when one's figures are set beside the other's


@dataclass
class Compiled:
    """What the compiled pass returns: the compiled run as measured (its images too), the ``compiled`` entry of
    ``run.json``, the eager records with the compiled kernels' times (None without attribution) and notes."""

    measured: Measured
    entry: dict
    ops: object = None
    notes: list = field(default_factory=list)


@contextlib.contextmanager
def compiled_components(pipe, capture):
    """The pipeline's denoiser and VAE decode under ``torch.compile`` (through ``capture``'s backends) inside the
    block; the eager ones are put back after."""
    import torch

    den = denoiser_name(pipe)
    patches = Patches()
    try:
        patches.set(pipe, den, torch.compile(getattr(pipe, den), backend=capture.backend(DENOISER, den),
                                             dynamic=False))
        patches.set(pipe.vae, "decode", torch.compile(pipe.vae.decode, backend=capture.backend("vae_decoder", "vae"),
                                                      dynamic=False))
        yield
    finally:
        patches.restore()


def compiled_pass(cfg: ProfileConfig, pipe, eager, report=None) -> Compiled:
    """Compile, attribute and time the compiled run of ``cfg``; ``eager``: the eager run's
    :class:`~diffprobe.run.result.ProfileResult` (its stage times, layer-type seconds and records)."""
    from diffprobe.timing import compiled as comp

    report = report or (lambda *_: None)
    plain = replace(cfg, trace_ops=False, chrome_trace=False, hardware=None, approx=None, compile=False,
                    cuda_graphs=False)
    once = replace(plain, repeat=1, warmup=0)
    full, evals = eager.denoiser_evals, eager.denoiser_evals_measured
    capture = comp.CompileCapture(cuda_graphs=cfg.cuda_graphs)
    with capture:
        report("eager run", 0, 1)
        eager_entry = _eager_entry(cfg, plain, pipe, eager)
        report("eager run", 1, 1)
        with compiled_components(pipe, capture):
            report("compile", 0, 1)
            t0 = time.perf_counter()
            measured_pass(once, pipe, full, evals).check()
            first_call_s = time.perf_counter() - t0
            report("compile", 1, 1)
            attributed = None
            if eager.ops is not None and not cfg.cuda_graphs:
                attributed = _attributed(once, pipe, eager, capture)
            report("compiled run", 0, 1)
            measured = measured_pass(plain, pipe, full, evals).check()  # the run's stage times and image
            report("compiled run", 1, 1)
    entry = {
        "backend": "inductor" + (" with CUDA graphs" if cfg.cuda_graphs else ""),
        "compiled": [DENOISER, "vae_decoder"],
        "graphs": capture.graph_count,
        "compile_s": capture.compile_s,
        "first_call_s": first_call_s,
        "compile_note": "compile_s: time inside Inductor (codegen and kernel build, cache hits included); "
                        "first_call_s: the first compiled run, compiling included; neither is in the stage times",
        "eager": eager_entry,
    }
    if attributed is None:
        entry["attribution"] = ("per stage only: kernels replayed from a CUDA graph link only to the graph launch"
                                if cfg.cuda_graphs else "none (no op tracing)")
        return Compiled(measured, entry)
    ops, a, profiled_stages = attributed
    notes = []
    slow = profiled_stages.get("total", 0.0) / max(measured.stages.get("total", 0.0), 1e-12)
    if slow > DIVERGE:  # the per-layer-type ratios come from a run whose times are not the stage times'
        notes.append(f"the compiled run's layer-type seconds come from its profiled run, which took {slow:.1f}x the "
                     "untraced compiled run's time: compare layer types within one column, not across eager and "
                     "compiled")
    entry.update({
        "kernels": a.kernels, "kernels_matched": a.matched_kernels, "graph_calls": a.calls,
        "kernel_s": a.kernel_s, "unattributed_s": a.unattributed_s, "profiled_run_stages": profiled_stages,
        "unattributed_kernels": dict(sorted(a.unattributed.items(), key=lambda kv: -kv[1])[:10]),
    })
    return Compiled(measured, entry, ops, notes)


def _eager_entry(cfg: ProfileConfig, plain: ProfileConfig, pipe, eager) -> dict:
    """The eager run's stage times (untraced: a traced run's carry the tracer's cost, so it is timed again) and
    layer-type seconds, to set beside the compiled run's."""
    stages = eager.stages
    if cfg.trace_ops:
        stages = measured_pass(plain, pipe, eager.denoiser_evals, eager.denoiser_evals_measured).check().stages
    return {"stages": dict(stages), "stages_source": "untraced eager run (same --repeat, --warmup)",
            "by_layer_type": dict(eager.accounts().get("seconds", {}).get("by_layer_type", {})),
            "by_layer_type_source": seconds_source(replace(cfg, compile=False, cuda_graphs=False))
            if cfg.trace_ops else None}


def _attributed(once: ProfileConfig, pipe, eager, capture):
    """One compiled run under the profiler: the eager records with each compiled kernel's time, the attribution,
    and the profiled run's stage times (the run the kernels come from)."""
    import pandas as pd
    from torch.profiler import ProfilerActivity, profile

    from diffprobe.records.schema import COLUMNS, OpRecord
    from diffprobe.timing import compiled as comp
    from diffprobe.timing.kernels import classify

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if once.device.startswith("cuda") else [])
    with profile(activities=acts, record_shapes=False, with_stack=False) as prof:
        origin = time.time_ns()
        profiled = measured_pass(once, pipe, eager.denoiser_evals, eager.denoiser_evals_measured).check()
    events = classify(prof.profiler.kineto_results.events())
    rows = [OpRecord(*t) for t in eager.ops.itertuples(index=False, name=None)]
    attribution = comp.attribute(comp.graph_calls(events), capture.graphs, rows, eager.denoiser_evals_measured)
    rows = comp.apply(rows, {DENOISER, "vae_decoder"}, attribution, origin)
    return pd.DataFrame(rows, columns=list(COLUMNS)), attribution, dict(profiled.stages)
