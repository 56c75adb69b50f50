"""``diffprobe profile``: one instrumented text-to-image run, timed per stage.

The run is the computation users run (diffusers' own pipeline: tokenizer -> text encoder(s) -> denoising loop
with classifier-free guidance -> VAE decode). On a CPU a full 50-step run takes minutes, so by default only the
first ``sample_steps`` denoising steps are executed (the loop is stopped after them, :mod:`diffprobe.run.stepping`,
and the VAE still decodes) and the full-run time is reported separately, as a
labelled projection: every step runs the same UNet on same-shaped tensors, so per-step cost is step-invariant.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from diffprobe.analyses import breakdown, roofline
from diffprobe.analyses.breakdown import layer_table
from diffprobe.analyses.savings import added_ops, approximate_account, steps_ran
from diffprobe.attention.approx import JOINT_NOTE, ApproxAttention, kernels_used, masked_note
from diffprobe.attention.core import installed
from diffprobe.errors import DiffprobeError, interruption
from diffprobe.hardware.environment import environment
from diffprobe.hardware.presets import get_preset
from diffprobe.models.registry import (
    DENOISERS,
    TEXT_ENCODERS,
    ModelSpec,
    count_params,
    denoiser,
    denoiser_name,
    get_spec,
)
from diffprobe.records.chrome import write_chrome_trace
from diffprobe.records.runfolder import prepare_out_dir, release_folder, write_ops, write_run_json, write_table
from diffprobe.records.schema import DENOISER, SCHEMA_VERSION  # run.json's version (ops.parquet: its own)
from diffprobe.records.tracer import OpTracer
from diffprobe.run.analytic import MetaAdapters
from diffprobe.run.config import (  # noqa: F401  (re-exported: diffprobe.run.profile names them too)
    ANALYTIC_NOTE,
    DEFAULT_PROMPT,
    DTYPES,
    MODES,
    OP_TIMERS,
    RANDOM_WEIGHTS_NOTE,
    SEED_MAX,
    WEIGHT_OVERHEAD,
    ProfileConfig,
    analytic_twin,
    check_device,
    check_memory,
    check_resolution,
    check_steps,
    memory_estimate,
    seconds_source,
)
from diffprobe.run.pipeline import (  # noqa: F401  (re-exported)
    build_pipeline,
    count_denoiser_evals,
    initial_latents,
    pipeline_kwargs,
    prompt_notes,
    stand_in_notes,
    to_pil,
)
from diffprobe.run.settings import parse_settings
from diffprobe.run.stepping import step_hooks
from diffprobe.run.warmup import warm_up
from diffprobe.timing.kernels import ProfilerTimer
from diffprobe.timing.ops import OpTimer
from diffprobe.timing.stages import STAGE_ORDER, StageEvent, StageTimer


@dataclass
class ProfileResult:
    """The outcome of :func:`profile`; ``to_dict()`` is what ``--format json`` prints and ``run.json`` holds."""

    config: ProfileConfig
    spec: ModelSpec
    params: dict[str, int] = field(default_factory=dict)  # parameters per component
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (median over --repeat)
    stage_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)  # per denoising step: denoiser and scheduler seconds
    unet_evals: int = 0  # denoiser evaluations of the full run
    unet_evals_measured: int = 0  # of them, those executed (sampled steps, or the steps before an interruption)
    peak_memory_bytes: int = 0
    peak_memory_kind: str = ""
    environment: dict = field(default_factory=dict)
    run_dir: str | None = None
    image: str | None = None
    status: str = "ok"
    error: str | None = None
    ops: object = None  # pandas DataFrame of OpRecords (None when op tracing is off)
    unsupported: dict = field(default_factory=dict)  # op name -> count of ops without a formula
    images: list = field(default_factory=list)  # the generated images' file names, in batch order
    image_complete: bool | None = None  # measured: whether every denoising step ran before the VAE decoded
    approx: dict | None = None  # --approx: the approximate pass's account and times (see _run_approx_pass)
    op_timer: dict | None = None  # --op-timer profiler: markers vs calls, device and outside-marker seconds
    chrome_trace: str | None = None  # --chrome-trace: the trace file's name in the run folder
    kernels: list | None = field(default=None, repr=False)  # profiler timer: device events (the trace's GPU track)
    compiled: dict | None = None  # --compile: compile time, the eager run's times beside, attribution totals
    notes: list = field(default_factory=list)  # warnings about the run itself (e.g. a prompt cut to fit)
    _accounts: tuple | None = field(default=None, init=False, repr=False, compare=False)  # inputs, summaries

    @property
    def random_weights(self) -> bool:
        return self.config.random_weights

    def projection(self) -> dict | None:
        """Full-run time projected from the measured steps, or ``None`` when every step ran."""
        if self.config.mode == "analytic" or self.unet_evals_measured >= self.unet_evals or not self.steps:
            return None
        per_step = statistics.median(s["unet_s"] for s in self.steps)
        per_sched = statistics.median(s["scheduler_s"] for s in self.steps)
        stages = dict(self.stages)
        stages[DENOISER] = per_step * self.unet_evals
        stages["scheduler"] = per_sched * self.unet_evals
        stages.pop("total", None)
        proj = {
            "label": "projection (not a measurement): measured per-step median x full step count",
            "unet_evals_measured": self.unet_evals_measured,
            "unet_evals_full": self.unet_evals,
            "stages": stages,
            "total_s": sum(stages.values()),
        }
        if self.ops is not None and len(self.ops):
            # every UNet evaluation has the same shapes, so per-evaluation FLOPs are exact; the scheduler's are
            # taken from the median measured step
            step_ops = self.ops[self.ops["stage"].isin([DENOISER, "scheduler"]) & (self.ops["step"] >= 0)]
            per_step = step_ops.groupby("step")["flops"].sum().median()
            rest = self.ops["flops"].sum() - step_ops["flops"].sum()
            proj["flops_total"] = int(rest + per_step * self.unet_evals)
        return proj

    def accounts(self) -> dict:
        """The cost account of the traced ops: ``flops``, ``bytes``, ``macs_conv_linear`` and, measured,
        ``seconds`` (see :mod:`diffprobe.analyses.breakdown`); computed once per set of records and stage times
        (the analyses run again only when a run replaces them)."""
        unsupported = tuple(sorted(self.unsupported.items()))
        c = self._accounts
        if c is None or c[0] is not self.ops or c[1] is not self.stages or c[2] != unsupported:
            self._accounts = c = (self.ops, self.stages, unsupported, self._compute_accounts())
        return c[3]

    def _compute_accounts(self) -> dict:
        if self.ops is None:
            return {}
        ops = breakdown.with_bytes(self.ops)
        acc = {
            "flops": breakdown.account(ops, "flops"),
            "bytes": breakdown.account(ops, "bytes"),
            "bytes_unfused_total": int(ops["bytes_unfused"].sum()) if len(ops) else 0,
            "macs_conv_linear": breakdown.macs_conv_linear(ops),
            "levels": breakdown.level_table(ops).to_dict(orient="records") if len(ops) else [],
        }
        if self.config.mode == "measured" and self.stages:
            timed = {("pipeline" if k == "other" else k): v for k, v in self.stages.items() if k != "total"}
            acc["seconds"] = breakdown.seconds_account(ops, timed)
            acc["seconds"]["source"] = seconds_source(self.config)
            busy = (self.op_timer or {}).get("busy_by_stage")
            if busy:  # union of each stage's device intervals, and the rest of the stage's time: the GPU idle
                acc["seconds"]["gpu_busy_s"] = busy
                acc["seconds"]["gpu_idle_s"] = {k: max(0.0, timed.get(k, 0.0) - v) for k, v in busy.items()}
        if self.config.hardware is not None and len(ops):
            acc["roofline"] = roofline.summary(ops, get_preset(self.config.hardware), acc.get("seconds"),
                                               None if self.config.mode == "analytic" else self.config.device)
        if self.unsupported:
            acc["warnings"] = [f"no FLOP formula for {op} ({n} calls): counted as 'other' with 0 FLOPs"
                               for op, n in sorted(self.unsupported.items())]
        return acc

    def to_dict(self) -> dict:
        c = self.config
        acc = self.accounts()
        d = {
            "schema_version": SCHEMA_VERSION,
            "kind": "profile",
            "status": self.status,
            "error": self.error,
            "model": c.model,
            "model_title": self.spec.title,
            "weights": c.weights or ("embedded" if self.spec.trained else "random"),
            "random_weights": self.random_weights,
            "note": ANALYTIC_NOTE if c.mode == "analytic" else RANDOM_WEIGHTS_NOTE if self.random_weights else None,
            "prompt": c.prompt,
            "height": c.height,
            "width": c.width,
            "steps": c.steps,
            "unet_evals": self.unet_evals,
            "unet_evals_measured": self.unet_evals_measured,
            "batch": c.batch,
            "guidance": c.guidance,
            "cfg": self.spec.uses_cfg(c.guidance),
            "seed": c.seed,
            "device": c.device,
            "dtype": c.dtype,
            "mode": c.mode,
            "compile": c.compile,
            "cuda_graphs": c.cuda_graphs,
            "repeat": c.repeat,
            "warmup": c.warmup,
            "params": self.params,
            "stages": self.stages,
            "stage_stats": self.stage_stats,
            "step_times": self.steps,
            "projection": self.projection(),
            "peak_memory_bytes": self.peak_memory_bytes,
            "peak_memory_kind": self.peak_memory_kind,
            "environment": self.environment,
            "run_dir": self.run_dir,
            "image": self.image,
            **acc,
            **{k: v for k, v in (("images", self.images or None), ("image_complete", self.image_complete),
                                 ("approx", self.approx), ("op_timer", self.op_timer),
                                 ("compiled", self.compiled),
                                 ("chrome_trace", self.chrome_trace)) if v is not None},
        }
        warnings = acc.get("warnings", []) + self.notes
        if warnings:
            d["warnings"] = warnings
        return d


def _is_oom(exc: BaseException) -> bool:
    import torch

    text = str(exc).lower()
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text or (
        "can't allocate memory" in text
    )


def _peak_memory(device: str) -> tuple[int, str]:
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(rss_kib * (1 if sys.platform == "darwin" else 1024)), "process peak RSS"


def summarize_events(runs: list[list]) -> tuple[dict, dict, list]:
    """Per-stage seconds (median over runs of each run's total), min/max/count stats, and per-step medians."""
    per_run_totals: list[dict[str, float]] = []
    per_step: dict[int, dict[str, list[float]]] = {}
    for events in runs:
        totals: dict[str, float] = {}
        for ev in events:
            totals[ev.stage] = totals.get(ev.stage, 0.0) + ev.seconds
            if ev.step is not None:
                per_step.setdefault(ev.step, {}).setdefault(ev.stage, []).append(ev.seconds)
        per_run_totals.append(totals)
    names = [s for s in (*STAGE_ORDER, "total") if any(s in t for t in per_run_totals)]
    stages = {s: statistics.median(t.get(s, 0.0) for t in per_run_totals) for s in names}
    stats = {}
    for s in names:
        vals = [t.get(s, 0.0) for t in per_run_totals]
        stats[s] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals)}
    steps = [
        {"step": i, "unet_s": statistics.median(d.get(DENOISER, [0.0])),
         "scheduler_s": statistics.median(d.get("scheduler", [0.0]))}
        for i, d in sorted(per_step.items())
    ]
    return stages, stats, steps


def _failure_message(exc: BaseException, stage: str | None, cfg: ProfileConfig) -> str:
    where = stage or "pipeline"
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({interruption(exc)}) in stage {where}"
    if _is_oom(exc):
        return (f"out of memory in stage {where} at {cfg.height}x{cfg.width}, batch {cfg.batch}; "
                "try a smaller --height/--width or --batch")
    return f"run failed in stage {where}: {type(exc).__name__}: {exc}"


def run_profile(cfg: ProfileConfig, progress=None, pipe=None) -> ProfileResult:
    """Run the profile described by a (resolved or not) config; see :func:`diffprobe.profile`.

    ``progress(stage, done, total)`` is called as work advances. A failure after measuring started still
    writes ``run.json`` (status ``failed``) with everything measured so far, then raises.
    """
    cfg = cfg.resolved()
    out_dir = prepare_out_dir(cfg.out, cfg.model, cfg.force)
    try:
        return _profile_into(cfg, out_dir, progress, pipe)
    finally:
        release_folder(out_dir)  # written: its files claim it from now on


def _profile_into(cfg: ProfileConfig, out_dir: Path, progress=None, pipe=None) -> ProfileResult:
    spec = get_spec(cfg.model)
    report = progress or (lambda *_: None)

    env = environment("cpu" if cfg.mode == "analytic" else cfg.device)
    nothing = ProfileResult(cfg, spec, environment=env, run_dir=str(out_dir))  # the folder says what happened
    with saved_on_failure(out_dir, nothing, "while building the pipeline; nothing was measured"):
        report("build", 0, 1)
        pipe = pipe or build_pipeline(cfg, spec)
        report("build", 1, 1)
        reuse = parse_settings(cfg.approx).reuse if cfg.approx else None
        if reuse is not None:  # a method for another model family is refused before any work
            reuse.check_model(pipe, cfg.model)
        params = {name: count_params(getattr(pipe, name)) for name in (*TEXT_ENCODERS, *DENOISERS, "vae")
                  if getattr(pipe, name, None) is not None}
        unet_evals = count_denoiser_evals(pipe, cfg.steps, "cpu")
        notes = prompt_notes(pipe, cfg.prompt, spec.max_sequence_length) + stand_in_notes(pipe)
    measured_evals = unet_evals if cfg.sample_steps == 0 else min(cfg.sample_steps, unet_evals)
    result = ProfileResult(cfg, spec, params=params, unet_evals=unet_evals, unet_evals_measured=measured_evals,
                           environment=env, run_dir=str(out_dir), notes=notes)
    if cfg.mode == "analytic":
        with saved_on_failure(out_dir, result, "while tracing"):
            _run_analytic(cfg, pipe, result, report)
            if cfg.approx is not None:  # reuse only (checked): its plan replayed on meta
                _run_approx_pass(cfg, pipe, result, report)
    else:
        _run_measured(cfg, pipe, result, report, out_dir)  # writes what it measured itself on any failure
        if cfg.compile:  # the eager run is measured: written before any error of the compiled run propagates
            with saved_on_failure(out_dir, result, "in the compiled run; the eager run is complete", failures=True):
                _run_compiled(cfg, pipe, result, report, out_dir)
        if cfg.approx is not None and result.ops is not None:
            with saved_on_failure(out_dir, result, "in the --approx pass; the dense run is complete"):
                _run_approx_pass(cfg, pipe, result, report)
    _save(out_dir, result)
    return result


@contextlib.contextmanager
def saved_on_failure(out_dir: Path, result: ProfileResult, where: str, failures: bool = False):
    """Write ``result`` (status ``interrupted``, or with ``failures`` ``failed`` too, its error naming ``where``)
    before an interruption (Ctrl-C, SIGTERM) or failure inside the block propagates: nothing measured is lost."""
    try:
        yield
    except KeyboardInterrupt as exc:
        result.status, result.error = "interrupted", f"interrupted ({interruption(exc)}) {where}"
        _save(out_dir, result)
        raise
    except BaseException as exc:
        if failures:
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc} {where}"
            _save(out_dir, result)
        raise


def _run_approx_pass(cfg: ProfileConfig, pipe, result: ProfileResult, report) -> None:
    """The same run with the ``--approx`` setting: attention approximation, step-level reuse, or both.

    With reuse, the run is traced again with the method installed (its account is the records of what ran);
    then dense and the setting are timed untraced, on the same noise. Approximate attention re-weights the
    attention records by each call's kept fraction. ``result.approx`` holds the account against dense (by stage
    and layer type), the per-step view of which UNet blocks ran, and the seconds of both untraced runs."""
    import tempfile
    from dataclasses import replace

    setting = parse_settings(cfg.approx)
    if setting.reuse is not None:
        setting.reuse.check_model(pipe, cfg.model)
    core = ApproxAttention(*setting.attention, seed=cfg.seed, mask_interval=cfg.mask_interval) if (
        setting.attention) else None
    report("approx", 0, 1)
    if core is not None:
        warm_up(pipe, cfg, [cfg.prompt] * cfg.batch, core)  # the block-sparse kernel compiles outside the timed run
    # a reuse method's plan differs from step to step: its account and seconds cover every step of the schedule
    # (the sampled steps of the dense profile above would give a share over other steps than the seconds beside it)
    full = cfg.mode == "measured" and setting.reuse is not None and result.unet_evals_measured < result.unet_evals
    evals = result.unet_evals if full else result.unet_evals_measured
    plain = replace(cfg, approx=None, trace_ops=False, chrome_trace=False, hardware=None, compile=False,
                    cuda_graphs=False, sample_steps=0 if full else cfg.sample_steps)

    def fresh(c):
        return ProfileResult(c, result.spec, params=result.params, unet_evals=result.unet_evals,
                             unet_evals_measured=evals, environment=result.environment)

    def methods():
        stack = contextlib.ExitStack()
        if core is not None:
            stack.enter_context(installed(denoiser(pipe), core.core))
        if setting.reuse is not None:
            stack.enter_context(setting.reuse.installed(pipe))
        return stack

    ops = dense_ops = result.ops
    with tempfile.TemporaryDirectory(prefix="diffprobe-approx-") as tmp:
        for sub in ("traced", "traced-dense", "dense", "approx"):
            (Path(tmp) / sub).mkdir()
        if setting.reuse is not None:  # the records of what runs with reuse (attention exact: its kept
            traced_cfg = replace(plain, trace_ops=True, mode=cfg.mode, repeat=1, warmup=0)  # fractions re-weight
            traced = fresh(traced_cfg)  # them below)
            replayed = full and not setting.reuse.data_dependent
            if replayed:  # every step, the method's plan replayed on meta (the FLOPs of a measured run, exactly)
                meta_cfg = analytic_twin(traced_cfg, out=None)
                ops, dense_ops = trace_with_reuse(meta_cfg, setting.reuse), trace_with_reuse(meta_cfg, None)
            with setting.reuse.installed(pipe) if not replayed else contextlib.nullcontext():
                if cfg.mode == "analytic":
                    _run_analytic(traced_cfg, pipe, traced, lambda *_: None, plan=setting.reuse.plan_key)
                elif not replayed:
                    _run_measured(traced_cfg, pipe, traced, lambda *_: None, Path(tmp) / "traced")
            if not replayed:
                ops = traced.ops
            if full and not replayed:  # decided from the activations: the dense records of every step, measured
                traced_dense = fresh(traced_cfg)
                _run_measured(traced_cfg, pipe, traced_dense, lambda *_: None, Path(tmp) / "traced-dense")
                dense_ops = traced_dense.ops
        dense = again = None
        if cfg.mode == "measured":
            dense = fresh(plain)
            _run_measured(plain, pipe, dense, lambda *_: None, Path(tmp) / "dense")  # dense, untraced, same noise
            again = fresh(plain)
            with methods():
                _run_measured(plain, pipe, again, lambda *_: None, Path(tmp) / "approx")  # the setting, untraced
            if again.image and result.run_dir:  # the approximate image beside the dense one
                shutil.copyfile(Path(tmp) / "approx" / again.image, Path(result.run_dir) / "image_approx.png")
    report("approx", 1, 1)
    acc = approximate_account(ops, core.calls if core is not None else None, dense=dense_ops)
    method, value = setting.attention or (setting.reuse.name, setting.reuse.value)
    result.approx = {"method": method, "value": value, "setting": setting.text, **acc,
                     "mask_interval": cfg.mask_interval if core is not None else None,
                     "steps": steps_ran(ops, dense_ops) if setting.reuse is not None else None,
                     "method_overhead": added_ops(dense_ops, ops) if setting.reuse is not None else None,
                     "unet_evals_accounted": evals,
                     "coverage": (f"every step of the schedule ({evals} denoiser evaluations), the account and both "
                                  f"untraced runs alike; the profile above measured {result.unet_evals_measured}"
                                  if full else f"the same {evals} of {result.unet_evals} denoiser evaluations as the "
                                  "profile above, the account and both untraced runs alike"),
                     "image": "image_approx.png" if again is not None else None,
                     "unet_seconds": again.stages.get(DENOISER) if again else None,
                     "unet_seconds_stats": again.stage_stats.get(DENOISER) if again else None,
                     "dense_unet_seconds": result.stages.get(DENOISER),
                     "dense_untraced_unet_seconds": dense.stages.get(DENOISER) if dense else None,
                     "dense_untraced_unet_seconds_stats": dense.stage_stats.get(DENOISER) if dense else None,
                     "kernel": kernels_used(core.calls) if core is not None else "dense",
                     "note": "FLOPs of the records that ran (reuse) and that a kernel skipping the dropped entries "
                             "would need (oracle attention methods: the potential); the seconds are this PyTorch "
                             "implementation's, untraced" + (
                                 f"; {JOINT_NOTE}" if core is not None and any(
                                     c["attn_kind"] == "joint" for c in core.calls) else "")
                             + "".join(f"; {line}" for line in masked_note(core.calls if core is not None else []))}


def _run_compiled(cfg: ProfileConfig, pipe, result: ProfileResult, report, out_dir: Path) -> None:
    """The same run with the denoiser and the VAE decoder under ``torch.compile``: compiled once (timed apart),
    once under the profiler (each compiled kernel's time, attributed to the eager records), then timed untraced as
    configured (the run's stage times). The eager run's stage and layer-type seconds stay beside, in
    ``result.compiled``."""
    import tempfile
    import time
    from dataclasses import replace

    import pandas as pd
    import torch
    from torch.profiler import ProfilerActivity, profile

    from diffprobe.records.schema import COLUMNS, OpRecord
    from diffprobe.timing import compiled as comp
    from diffprobe.timing.kernels import classify

    eager_seconds = result.accounts().get("seconds", {})
    plain = replace(cfg, trace_ops=False, chrome_trace=False, hardware=None, approx=None, compile=False,
                    cuda_graphs=False)
    den = denoiser_name(pipe)
    unet, had_decode = getattr(pipe, den), "decode" in vars(pipe.vae)
    capture = comp.CompileCapture(cuda_graphs=cfg.cuda_graphs)
    scratch = ProfileResult(plain, result.spec, params=result.params, unet_evals=result.unet_evals,
                            unet_evals_measured=result.unet_evals_measured, environment=result.environment)
    with capture, tempfile.TemporaryDirectory(prefix="diffprobe-compile-") as tmp:
        report("eager run", 0, 1)
        if cfg.trace_ops:  # the traced run's stage times carry the tracer's cost: time eager untraced too
            _run_measured(plain, pipe, scratch, lambda *_: None, Path(tmp))
        else:
            scratch.stages = result.stages
        eager = {"stages": dict(scratch.stages), "stages_source": "untraced eager run (same --repeat, --warmup)",
                 "by_layer_type": dict(eager_seconds.get("by_layer_type", {})),
                 "by_layer_type_source": seconds_source(replace(cfg, compile=False, cuda_graphs=False))
                 if cfg.trace_ops else None}
        report("eager run", 1, 1)
        try:
            setattr(pipe, den, torch.compile(unet, backend=capture.backend(DENOISER, den), dynamic=False))
            pipe.vae.decode = torch.compile(pipe.vae.decode, backend=capture.backend("vae_decoder", "vae"),
                                            dynamic=False)
            report("compile", 0, 1)
            t0 = time.perf_counter()
            _run_measured(replace(plain, repeat=1, warmup=0), pipe, scratch, lambda *_: None, Path(tmp))
            first_call_s = time.perf_counter() - t0
            report("compile", 1, 1)
            attribution = None
            if result.ops is not None and not cfg.cuda_graphs:
                device = cfg.device.startswith("cuda")
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device else [])
                with profile(activities=acts, record_shapes=False, with_stack=False) as prof:
                    origin = time.time_ns()
                    _run_measured(replace(plain, repeat=1, warmup=0), pipe, scratch, lambda *_: None, Path(tmp))
                profiled_stages = dict(scratch.stages)  # the stage times of the run the kernels come from
                events = classify(prof.profiler.kineto_results.events())
                rows = [OpRecord(*t) for t in result.ops.itertuples(index=False, name=None)]
                attribution = comp.attribute(comp.graph_calls(events), capture.graphs, rows,
                                             result.unet_evals_measured)
                rows = comp.apply(rows, {DENOISER, "vae_decoder"}, attribution, origin)
                result.ops = pd.DataFrame(rows, columns=list(COLUMNS))
            report("compiled run", 0, 1)
            _run_measured(plain, pipe, scratch, lambda *_: None, out_dir)  # the run's stage times and image
            report("compiled run", 1, 1)
        finally:
            setattr(pipe, den, unet)
            if not had_decode:
                vars(pipe.vae).pop("decode", None)
    result.stages, result.stage_stats, result.steps = scratch.stages, scratch.stage_stats, scratch.steps
    result.peak_memory_bytes = max(result.peak_memory_bytes, scratch.peak_memory_bytes)
    result.compiled = {
        "backend": "inductor" + (" with CUDA graphs" if cfg.cuda_graphs else ""),
        "compiled": [DENOISER, "vae_decoder"],
        "graphs": capture.graph_count,
        "compile_s": capture.compile_s,
        "first_call_s": first_call_s,
        "compile_note": "compile_s: time inside Inductor (codegen and kernel build, cache hits included); "
                        "first_call_s: the first compiled run, compiling included; neither is in the stage times",
        "eager": eager,
    }
    if attribution is not None:
        slow = profiled_stages.get("total", 0.0) / max(result.stages.get("total", 0.0), 1e-12)
        if slow > DIVERGE:  # the per-layer-type ratios come from a run whose times are not the stage times'
            result.notes.append(f"the compiled run's layer-type seconds come from its profiled run, which took "
                                f"{slow:.1f}x the untraced compiled run's time: compare layer types within one column, "
                                "not across eager and compiled")
        a = attribution
        result.compiled.update({
            "kernels": a.kernels, "kernels_matched": a.matched_kernels, "graph_calls": a.calls,
            "kernel_s": a.kernel_s, "unattributed_s": a.unattributed_s, "profiled_run_stages": profiled_stages,
            "unattributed_kernels": dict(sorted(a.unattributed.items(), key=lambda kv: -kv[1])[:10]),
        })
    else:
        result.compiled["attribution"] = ("per stage only: kernels replayed from a CUDA graph link only to the "
                                          "graph launch" if cfg.cuda_graphs else "none (no op tracing)")


DIVERGE = 1.5  # two runs whose times differ by more than this are flagged when one's figures are set beside the other's


def tracer_for(cfg: ProfileConfig, pipe, timed: bool):
    """The op tracer of a run; ``timed`` gives it a per-op timer on the run's device (the timer fills the time
    columns, the tracer only counts)."""

    timer = None
    if timed:
        timer = ProfilerTimer(cfg.device) if cfg.op_timer == "profiler" else OpTimer(cfg.device)
    return OpTracer(pipe, latent_hw=(cfg.height // pipe.vae_scale_factor, cfg.width // pipe.vae_scale_factor),
                    cfg=get_spec(cfg.model).uses_cfg(cfg.guidance), timer=timer)


def trace_with_reuse(cfg: ProfileConfig, reuse):
    """The records of a run with step-level ``reuse`` installed (None: dense), traced on meta (an analytic
    ``cfg``) with the method's plan replayed: what runs at every step."""
    cfg = cfg.resolved()
    spec = get_spec(cfg.model)
    pipe = build_pipeline(cfg, spec)
    result = ProfileResult(cfg, spec)
    with reuse.installed(pipe) if reuse is not None else contextlib.nullcontext():
        _run_analytic(cfg, pipe, result, lambda *_: None, plan=reuse.plan_key if reuse is not None else None)
    return result.ops


def _run_analytic(cfg: ProfileConfig, pipe, result: ProfileResult, report, plan=None) -> None:
    """Trace the pipeline on meta; ``plan(step)`` (a reuse method's) keys which traced UNet step a later step
    replays (default: every step replays the first of its shapes)."""
    import torch

    tracer = tracer_for(cfg, pipe, timed=False)
    report("trace", 0, 1)
    kwargs = pipeline_kwargs(cfg, pipe)
    with torch.inference_mode(), MetaAdapters(pipe, tracer, plan=plan), tracer:
        pipe(**kwargs)
    report("trace", 1, 1)
    result.ops, result.unsupported = tracer.table(), dict(tracer.unsupported)
    result.peak_memory_kind = "none (analytic: nothing is allocated)"


def _run_measured(cfg: ProfileConfig, pipe, result: ProfileResult, report, out_dir: Path) -> None:
    import torch

    measured_evals = result.unet_evals_measured
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timer = StageTimer(pipe, cfg.device)
    runs: list[list] = []
    total_runs = cfg.warmup + cfg.repeat
    images = None
    tracer = None
    try:
        with timer, torch.inference_mode():
            for run_idx in range(total_runs):
                timer.clear()

                def on_step(i, latents, run_idx=run_idx):
                    report("denoise", i + 1 + run_idx * measured_evals, measured_evals * total_runs)

                kwargs = pipeline_kwargs(cfg, pipe)
                tracer = tracer_for(cfg, pipe, timed=True) if cfg.trace_ops else None
                # the loop stops after the sampled steps (remaining steps skipped, the VAE still decodes)
                stop = measured_evals if measured_evals < result.unet_evals else None
                with step_hooks(pipe, on_step, stop) as hooks, (
                        tracer if tracer is not None else contextlib.nullcontext()):
                    start = timer.mark()
                    images = pipe(**kwargs, **hooks).images
                    end = timer.mark()
                events = timer.events()
                total = timer.clock.seconds(start, end)
                events.append(StageEvent("other", None, max(0.0, total - sum(e.seconds for e in events))))
                events.append(StageEvent("total", None, total))
                if run_idx >= cfg.warmup:
                    runs.append(events)
    except BaseException as exc:  # Ctrl-C included: what was measured is written before it propagates
        in_flight = timer.events()  # the interrupted run's finished stages: measured, so kept
        _collect(result, runs + ([in_flight] if in_flight else []), tracer, cfg.device)
        if not runs:  # no run finished: the evaluations measured are the steps the interrupted one completed
            result.unet_evals_measured = len({e.step for e in in_flight if e.stage == DENOISER and e.step is not None})
            result.image_complete = False
        msg = _failure_message(exc, timer.failed_stage or timer.current_stage, cfg)
        result.status, result.error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), msg
        _save(out_dir, result)
        if _is_oom(exc):
            raise DiffprobeError(msg + f" (partial results in {out_dir / 'run.json'})") from exc
        raise
    _collect(result, runs, tracer, cfg.device)  # the last measured run's records
    names = []
    for i, img in enumerate(to_pil(pipe, images)):
        name = "image.png" if len(images) == 1 else f"image_{i}.png"
        img.save(out_dir / name)
        names.append(name)
    result.image = names[0]
    result.images = names
    result.image_complete = measured_evals >= result.unet_evals


def _collect(result: ProfileResult, runs: list[list], tracer, device: str) -> None:
    """Stage times, peak memory and the op records of the runs measured so far, into ``result``."""
    if runs:
        result.stages, result.stage_stats, result.steps = summarize_events(runs)
    result.peak_memory_bytes, result.peak_memory_kind = _peak_memory(device)
    if tracer is not None:
        result.ops, result.unsupported = tracer.table(), dict(tracer.unsupported)
        summary = getattr(tracer.timer, "summary", None)
        if summary:  # the profiler timer: markers seen vs calls handled, device and outside-marker seconds
            result.op_timer = {"timer": "profiler", **summary}
            result.kernels = tracer.timer.kernels


def _save(out_dir: Path, result: ProfileResult) -> None:
    if result.ops is not None:
        write_ops(out_dir, result.ops)
        write_table(out_dir / "layers.parquet", layer_table(result.ops))
        if result.config.chrome_trace and result.config.mode == "measured":
            result.chrome_trace = write_chrome_trace(out_dir / "trace.json", result.ops, result.kernels).name
    write_run_json(out_dir, result.to_dict())
