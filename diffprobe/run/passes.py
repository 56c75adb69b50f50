"""The passes of a run, each returning what it found: the analytic trace (records on meta), the measured run (stage
times, per-op records and times, images) and the records of a run with a step-level reuse method replayed on meta.

A pass writes nothing: the caller (:mod:`diffprobe.run.profile`) keeps what it returns and saves the folder. A measured
pass that fails or is interrupted returns what it measured with the failure in it (:meth:`Measured.check` raises it),
so that nothing measured is lost."""

from __future__ import annotations

import contextlib
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

from diffprobe.errors import DiffprobeError, interruption
from diffprobe.models.registry import get_spec, vae_scale
from diffprobe.records.schema import DENOISER
from diffprobe.records.tracer import OpTracer
from diffprobe.run.analytic import MetaAdapters
from diffprobe.run.config import ProfileConfig
from diffprobe.run.pipeline import PipelineCall, build_pipeline, output_of
from diffprobe.run.stepping import step_hooks
from diffprobe.timing.kernels import ProfilerTimer
from diffprobe.timing.ops import OpTimer
from diffprobe.timing.stages import StageEvent, StageTimer, summarize_events


def tracer_for(cfg: ProfileConfig, pipe, timed: bool) -> OpTracer:
    """The op tracer of a run; ``timed`` gives it a per-op timer on the run's device (the timer fills the time
    columns, the tracer only counts)."""
    timer = None
    if timed:
        timer = ProfilerTimer(cfg.device) if cfg.op_timer == "profiler" else OpTimer(cfg.device)
    scale = vae_scale(pipe)
    return OpTracer(pipe, latent_hw=(cfg.height // scale, cfg.width // scale),
                    latent_frames=get_spec(cfg.model).family.latent_frames(cfg.frames or 1),
                    cfg=get_spec(cfg.model).uses_cfg(cfg.guidance), timer=timer,
                    calls_per_step=get_spec(cfg.model).calls_per_step(cfg.guidance))


@dataclass
class Traced:
    """The records of an analytic pass: one row per op (a pandas DataFrame) and the ops without a formula."""

    ops: object
    unsupported: dict


@contextlib.contextmanager
def gc_paused():
    """Python's cycle collector paused: an analytic trace makes hundreds of thousands of records (tuples holding
    shape lists) and nothing cyclic worth collecting, and the collector's passes over them cost seconds; it runs
    again on leaving."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def analytic_pass(cfg: ProfileConfig, pipe, report=None, plan=None) -> Traced:
    """Trace the pipeline on meta; ``plan(step)`` (a reuse method's) keys which traced denoiser step a later step
    replays (default: every step replays the first of its shapes)."""
    import torch

    report = report or (lambda *_: None)
    tracer = tracer_for(cfg, pipe, timed=False)
    report("trace", 0, 1)
    kwargs = PipelineCall(cfg).kwargs(pipe)
    with gc_paused(), torch.inference_mode(), MetaAdapters(pipe, tracer, plan=plan), tracer:
        pipe(**kwargs)
    report("trace", 1, 1)
    with gc_paused():
        return Traced(tracer.table(), dict(tracer.unsupported))


def trace_with_reuse(cfg: ProfileConfig, reuse):
    """The records of a run with step-level ``reuse`` installed (None: dense), traced on meta (an analytic
    ``cfg``) with the method's plan replayed: what runs at every step."""
    cfg = cfg.resolved()
    pipe = build_pipeline(cfg, get_spec(cfg.model))
    with reuse.installed(pipe) if reuse is not None else contextlib.nullcontext():
        return analytic_pass(cfg, pipe, plan=reuse.plan_key if reuse is not None else None).ops


@dataclass
class Measured:
    """What a measured pass measured: stage seconds (median over ``--repeat``), their spread, per-step seconds, peak
    memory, the last run's op records (traced runs) and images; ``evals`` denoiser evaluations each. ``failure``: the
    exception that ended the pass early (``status`` / ``message`` say how), everything above measured before it."""

    evals: int
    stages: dict = field(default_factory=dict)
    stage_stats: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""
    ops: object = None
    unsupported: dict = field(default_factory=dict)
    op_timer: dict | None = None
    kernels: list | None = None
    images: object = None  # the pipeline's ``pt`` output of the last run
    image_complete: bool | None = None
    failure: BaseException | None = None
    status: str = "ok"
    message: str | None = None
    runs: list = field(default_factory=list)  # each measured run's stage events (what the medians are over)

    def check(self, partial: Path | None = None) -> "Measured":
        """Raise the failure that ended the pass, if any (out of memory as one clear line, naming ``partial``: the
        file holding what was measured); else return self."""
        exc = self.failure
        if exc is None:
            return self
        if is_oom(exc):
            where = f" (partial results in {partial})" if partial is not None else ""
            raise DiffprobeError(self.message + where) from exc
        raise exc


def merged(parts: list[Measured]) -> Measured:
    """Passes of one configuration measured one run at a time (alternating with another's) as one: stage seconds
    the medians over all their runs, the last pass's records and images, the highest peak memory."""
    out = parts[-1]
    runs = [r for p in parts for r in p.runs]
    out.stages, out.stage_stats, out.steps = summarize_events(runs)
    out.runs, out.peak_memory_bytes = runs, max(p.peak_memory_bytes for p in parts)
    return out


def is_oom(exc: BaseException) -> bool:
    import torch

    text = str(exc).lower()
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text or (
        "can't allocate memory" in text
    )


def peak_memory(device: str) -> tuple[int, str]:
    """The run's peak memory so far, and what it is (CUDA allocator, or the process's peak RSS)."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(rss_kib * (1 if sys.platform == "darwin" else 1024)), "process peak RSS"


def failure_message(exc: BaseException, stage: str | None, cfg: ProfileConfig) -> str:
    where = stage or "pipeline"
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({interruption(exc)}) in stage {where}"
    if is_oom(exc):
        return (f"out of memory in stage {where} at {cfg.height}x{cfg.width}, batch {cfg.batch}; "
                "try a smaller --height/--width or --batch")
    return f"run failed in stage {where}: {type(exc).__name__}: {exc}"


def measured_pass(cfg: ProfileConfig, pipe, evals_full: int, evals: int, report=None,
                  prompts: tuple[str, ...] | None = None) -> Measured:
    """``cfg.warmup`` then ``cfg.repeat`` timed runs of the pipeline, stopped after ``evals`` of its ``evals_full``
    denoiser evaluations (the VAE still decodes), traced when ``cfg.trace_ops``; on ``prompts`` (None: the config's
    prompt, :class:`~diffprobe.run.pipeline.PipelineCall`). Ctrl-C and failures included, what was measured is
    returned, the failure in it (see :meth:`Measured.check`)."""
    import torch

    report = report or (lambda *_: None)
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timer = StageTimer(pipe, cfg.device, get_spec(cfg.model).calls_per_step(cfg.guidance))
    runs: list[list] = []
    total_runs = cfg.warmup + cfg.repeat
    images = tracer = None
    stop = evals if evals < evals_full else None  # the remaining steps skipped, the VAE still decodes
    try:
        with timer, torch.inference_mode():
            for run_idx in range(total_runs):
                timer.clear()

                def on_step(i, latents, run_idx=run_idx):
                    report("denoise", i + 1 + run_idx * evals, evals * total_runs)

                call = PipelineCall(cfg, prompts).kwargs(pipe)
                tracer = tracer_for(cfg, pipe, timed=True) if cfg.trace_ops else None
                with step_hooks(pipe, on_step, stop) as hooks, tracer or contextlib.nullcontext():
                    start = timer.mark()
                    images = output_of(pipe(**call, **hooks))
                    end = timer.mark()
                if run_idx >= cfg.warmup:
                    runs.append(_with_totals(timer, timer.events(), start, end))
    except BaseException as exc:  # Ctrl-C included: what was measured is returned with the failure
        in_flight = timer.events()  # the interrupted run's finished stages: measured, so kept
        out = _collected(cfg, evals, runs + ([in_flight] if in_flight else []), tracer)
        if not runs:  # no run finished: the evaluations measured are the steps the interrupted one completed
            out.evals = len({e.step for e in in_flight if e.stage == DENOISER and e.step is not None})
            out.image_complete = False
        out.failure = exc
        out.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        out.message = failure_message(exc, timer.failed_stage or timer.current_stage, cfg)
        return out
    out = _collected(cfg, evals, runs, tracer)  # the last measured run's records
    out.images, out.image_complete = images, evals >= evals_full
    return out


def _with_totals(timer: StageTimer, events: list, start, end) -> list:
    """A run's stage events with the pipeline's own time outside them (``other``) and the run's ``total``."""
    total = timer.clock.seconds(start, end)
    return events + [StageEvent("other", None, max(0.0, total - sum(e.seconds for e in events))),
                     StageEvent("total", None, total)]


def _collected(cfg: ProfileConfig, evals: int, runs: list[list], tracer) -> Measured:
    """Stage times, peak memory and the op records of the runs measured so far."""
    out = Measured(evals, runs=list(runs))
    if runs:
        out.stages, out.stage_stats, out.steps = summarize_events(runs)
    out.peak_memory_bytes, out.peak_memory_kind = peak_memory(cfg.device)
    if tracer is not None:
        out.ops, out.unsupported = tracer.table(), dict(tracer.unsupported)
        summary = tracer.timer.summary if tracer.timer is not None else None
        if summary:  # the profiler timer: markers seen vs calls handled, device and outside-marker seconds
            out.op_timer = {"timer": "profiler", **summary}
            out.kernels = tracer.timer.kernels
    return out
