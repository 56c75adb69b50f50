"""The outcome of a profile: its configuration, what each pass measured or traced, and the ``run.json`` it writes
(:meth:`ProfileResult.to_dict`), with the cost accounts computed from its records."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from diffprobe.analyses import breakdown, roofline
from diffprobe.analyses.moe import expert_load
from diffprobe.analyses.predict import machine_speed
from diffprobe.hardware.presets import get_preset
from diffprobe.models.registry import ModelSpec
from diffprobe.records.documents import RunDocument
from diffprobe.records.schema import DENOISER
from diffprobe.run.config import ANALYTIC_NOTE, RANDOM_WEIGHTS_NOTE, ProfileConfig, seconds_source


@dataclass
class ProfileResult:
    """The outcome of :func:`profile`; ``to_dict()`` is what ``--format json`` prints and ``run.json`` holds."""

    config: ProfileConfig
    spec: ModelSpec
    params: dict[str, int] = field(default_factory=dict)  # parameters per component
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (median over --repeat)
    stage_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)  # per denoising step: denoiser and scheduler seconds
    denoiser_evals: int = 0  # denoiser evaluations of the full run
    denoiser_evals_measured: int = 0  # of them, those executed (sampled steps, or the steps before an interruption)
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
    findings: list = field(default_factory=list)  # what the run's numbers say, in sentences (set when it is saved)
    scheduler: str = ""  # the scheduler class the pipeline ran (the model's, or --scheduler's)
    approx_ops: object = field(default=None, repr=False)  # --approx: the setting's records (ops_approx.parquet)
    moe: dict | None = None  # the denoiser's mixture of experts (Family.moe), the expert loads added from the records
    reference_rates: list | None = None  # a calibrated --hardware's reference FLOP/s, timed before and after the run
    _accounts: tuple | None = field(default=None, init=False, repr=False, compare=False)  # inputs, summaries

    def take(self, measured) -> None:
        """Keep what a measured pass (:class:`~diffprobe.run.passes.Measured`) measured: stage and step times, peak
        memory, its records and profiler output where it traced, and how many evaluations it completed."""
        m = measured
        if m.stages:
            self.stages, self.stage_stats, self.steps = m.stages, m.stage_stats, m.steps
        self.peak_memory_bytes, self.peak_memory_kind = m.peak_memory_bytes, m.peak_memory_kind
        if m.ops is not None:
            self.ops, self.unsupported = m.ops, m.unsupported
            if m.op_timer is not None:
                self.op_timer, self.kernels = m.op_timer, m.kernels
        self.denoiser_evals_measured, self.image_complete = m.evals, m.image_complete
        if m.failure is not None:
            self.status, self.error = m.status, m.message

    @property
    def random_weights(self) -> bool:
        return self.config.random_weights

    def projection(self) -> dict | None:
        """Full-run time projected from the measured steps, or ``None`` when every step ran."""
        if self.config.mode == "analytic" or self.denoiser_evals_measured >= self.denoiser_evals or not self.steps:
            return None
        per_step = statistics.median(s["denoiser_s"] for s in self.steps)
        per_sched = statistics.median(s["scheduler_s"] for s in self.steps)
        stages = dict(self.stages)
        stages[DENOISER] = per_step * self.denoiser_evals
        stages["scheduler"] = per_sched * self.denoiser_evals
        stages.pop("total", None)
        proj = {
            "label": "projection (not a measurement): measured per-step median x full step count",
            "denoiser_evals_measured": self.denoiser_evals_measured,
            "denoiser_evals_full": self.denoiser_evals,
            "stages": stages,
            "total_s": sum(stages.values()),
        }
        if self.ops is not None and len(self.ops):
            # every UNet evaluation has the same shapes, so per-evaluation FLOPs are exact; the scheduler's are
            # taken from the median measured step
            step_ops = self.ops[self.ops["stage"].isin([DENOISER, "scheduler"]) & (self.ops["step"] >= 0)]
            per_step = step_ops.groupby("step")["flops"].sum().median()
            rest = self.ops["flops"].sum() - step_ops["flops"].sum()
            proj["flops_total"] = int(rest + per_step * self.denoiser_evals)
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
        per_call = self._per_call_and_sample(acc)
        if per_call is not None:
            acc["denoiser_per_call_and_sample"] = per_call
        if self.moe is not None:
            acc["moe"] = {**self.moe, "expert_load": expert_load(ops)}
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

    def _per_call_and_sample(self, acc: dict) -> dict | None:
        """The denoiser's FLOPs and literature MACs for one call on one sample of its batch (images x CFG
        branches): the per-step figure papers report (DeepCache's "MACs per step")."""
        per_step = self.spec.calls_per_step(self.config.guidance)
        calls = self.denoiser_evals_measured * per_step
        flops = acc["flops"]["by_stage"].get(DENOISER)
        if not calls or not flops:
            return None
        samples = self.config.batch * (2 if self.spec.uses_cfg(self.config.guidance) and per_step == 1 else 1)
        return {"flops": flops / calls / samples,
                "macs_conv_linear": acc["macs_conv_linear"].get(DENOISER, 0) / calls / samples,
                "calls": calls, "samples_per_call": samples}

    def to_dict(self) -> dict:
        """``run.json`` as JSON (:meth:`document`'s)."""
        return self.document().to_json()

    def document(self) -> RunDocument:
        c = self.config
        acc = self.accounts()
        speed = (machine_speed(get_preset(c.hardware).calibration, self.reference_rates) if self.reference_rates
                 else None)  # the machine's speed around a measured run against its calibration's
        d = {
            "status": self.status,
            "error": self.error,
            "model": c.model,
            "model_title": self.spec.title,
            "family": self.spec.family.name,
            "denoiser_kind": self.spec.family.denoiser_kind,
            "weights": c.weights or ("embedded" if self.spec.trained else "random"),
            "random_weights": self.random_weights,
            "note": ANALYTIC_NOTE if c.mode == "analytic" else RANDOM_WEIGHTS_NOTE if self.random_weights else None,
            "prompt": c.prompt,
            "height": c.height,
            "width": c.width,
            "steps": c.steps,
            "scheduler": self.scheduler or self.spec.config("scheduler")["_class_name"],
            "denoiser_evals": self.denoiser_evals,
            "denoiser_evals_measured": self.denoiser_evals_measured,
            "denoiser_calls_per_step": self.spec.calls_per_step(c.guidance),
            "frames": c.frames,
            "latent_frames": self.spec.family.latent_frames(c.frames) if c.frames else None,
            "tokens": self.spec.tokens(c.height, c.width, c.frames),
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
            "findings": self.findings,
            **{k: v for k, v in (("images", self.images or None), ("image_complete", self.image_complete),
                                 ("approx", self.approx), ("op_timer", self.op_timer),
                                 ("compiled", self.compiled), ("chrome_trace", self.chrome_trace),
                                 ("machine_speed", speed)) if v is not None},
        }
        warnings = acc.get("warnings", []) + self.notes + ([speed["note"]] if speed and "note" in speed else [])
        if warnings:
            d["warnings"] = warnings
        return RunDocument.from_fields(d, "run.json")
