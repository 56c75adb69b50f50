"""``diffprobe profile``: one instrumented text-to-image run, timed per stage.

The run is the computation users run (diffusers' own pipeline: tokenizer -> text encoder(s) -> denoising loop
with classifier-free guidance -> VAE decode). On a CPU a full 50-step run takes minutes, so by default only the
first ``sample_steps`` denoising steps are executed (the loop is stopped after them, :mod:`diffprobe.run.stepping`,
and the VAE still decodes) and the full-run time is reported separately, as a
labelled projection: every step runs the same UNet on same-shaped tensors, so per-step cost is step-invariant.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from diffprobe.analyses import breakdown, roofline
from diffprobe.analyses.breakdown import layer_table
from diffprobe.analyses.savings import added_ops, approximate_account, steps_ran
from diffprobe.attention.approx import JOINT_NOTE, ApproxAttention, kernels_used, masked_note
from diffprobe.attention.approx import check_model as check_attention_model
from diffprobe.attention.core import installed
from diffprobe.errors import DiffprobeError, interruption
from diffprobe.hardware.environment import environment
from diffprobe.hardware.presets import get_preset
from diffprobe.models.registry import (
    DENOISERS,
    TEXT_ENCODERS,
    ModelSpec,
    build_components,
    build_scheduler,
    check_weights_path,
    count_params,
    denoiser,
    denoiser_name,
    get_spec,
    load_pipeline,
    pipeline_from_components,
    text_encoder_names,
)
from diffprobe.records.chrome import write_chrome_trace
from diffprobe.records.runfolder import prepare_out_dir, release_folder, write_ops, write_run_json, write_table
from diffprobe.records.schema import DENOISER, SCHEMA_VERSION  # run.json's version (ops.parquet: its own)
from diffprobe.records.tracer import OpTracer
from diffprobe.run.analytic import MetaAdapters
from diffprobe.run.settings import parse_settings
from diffprobe.run.stepping import step_hooks
from diffprobe.run.warmup import warm_up
from diffprobe.timing.kernels import ProfilerTimer
from diffprobe.timing.ops import OpTimer
from diffprobe.timing.stages import STAGE_ORDER, StageEvent, StageTimer

DTYPES = ("float32", "float16", "bfloat16")
MODES = ("measured", "analytic")
OP_TIMERS = ("clock", "profiler")
RANDOM_WEIGHTS_NOTE = "architecture-only: timings and FLOPs are real, image content and sparsity are not"
ANALYTIC_NOTE = ("analytic: counted on the meta device with no weights and no compute: FLOPs and bytes are exact, "
                 "nothing was timed and no image was drawn")
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed
DEFAULT_PROMPT = "a photo of an astronaut riding a horse on mars"


@dataclass
class ProfileConfig:
    """Everything that defines a profile run. ``None`` means the model's default."""

    model: str = "sd21-base"
    prompt: str = DEFAULT_PROMPT
    height: int | None = None
    width: int | None = None
    steps: int | None = None  # None: the model's default (its pipeline's own)
    batch: int = 1
    guidance: float | None = None  # None: the model's default (ModelSpec.default_guidance)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    weights: str | None = None
    allow_pickle: bool = False
    repeat: int = 1
    warmup: int = 0
    sample_steps: int | None = None  # denoising steps actually executed; None: 3 on CPU, all on CUDA; 0: all
    out: str | None = None
    mode: str = "measured"  # "measured": real execution, timed; "analytic": meta device, no compute
    trace_ops: bool = True  # measured mode: record every op (FLOPs, bytes, time); False: stage timing only
    chrome_trace: bool = False  # measured mode: also write trace.json (Chrome / Perfetto) into the run folder
    hardware: str | None = None  # hardware preset (name or .toml path) for the roofline account; None: none
    approx: str | None = None  # "METHOD=VALUE": also run approximate attention and account for it beside dense
    force: bool = False  # replace the diffprobe results in a non-empty --out
    op_timer: str = "clock"  # per-op times: "clock" (marks around each op) or "profiler" (torch.profiler events)
    compile: bool = False  # also run the denoiser and VAE decoder under torch.compile (Inductor) and time that
    cuda_graphs: bool = False  # CUDA only: the compiled run replays CUDA graphs (Inductor's cudagraphs)
    mask_interval: int = 1  # --approx block=τ: a layer's block mask predicted every N steps, reused in between

    @property
    def random_weights(self) -> bool:
        """Whether this run's weights are random (no ``--weights``, and the model has no trained embedded ones):
        its timings and FLOPs are real, its image content and attention sparsity are not."""
        return self.weights is None and not get_spec(self.model).trained

    def resolved(self) -> "ProfileConfig":
        """A copy with defaults filled in and every field validated (raises :class:`DiffprobeError`)."""
        spec = get_spec(self.model)
        cfg = ProfileConfig(**asdict(self))
        for side in ("height", "width"):
            value = getattr(cfg, side)
            if value is not None and value <= 0:
                raise DiffprobeError(f"--{side} must be a positive number of px, got {value} (leave it out for "
                                     f"{spec.name}'s native {spec.native_resolution} px)")
        if cfg.steps is None:
            cfg.steps = spec.default_steps
        cfg.height = cfg.height if cfg.height is not None else spec.native_resolution
        cfg.width = cfg.width if cfg.width is not None else spec.native_resolution
        check_resolution(spec, cfg.height, cfg.width, ("--height", "--width"))
        for flag, value, low in (("steps", cfg.steps, 1), ("batch", cfg.batch, 1), ("repeat", cfg.repeat, 1),
                                 ("warmup", cfg.warmup, 0)):
            if value < low:
                raise DiffprobeError(f"--{flag} must be at least {low}, got {value}")
        if not 0 <= cfg.seed <= SEED_MAX:
            raise DiffprobeError(f"--seed must be between 0 and {SEED_MAX} (2^63 - 1), got {cfg.seed}")
        check_steps(spec, cfg.steps)
        if cfg.guidance is None:
            cfg.guidance = spec.default_guidance
        if not (math.isfinite(cfg.guidance) and cfg.guidance >= 0):
            raise DiffprobeError(f"--guidance must be a finite number >= 0 (1 or less: no classifier-free "
                                 f"guidance), got {cfg.guidance}")
        if cfg.sample_steps is not None and cfg.sample_steps < 0:
            raise DiffprobeError(f"--sample-steps must be 0 (all) or more, got {cfg.sample_steps}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
            raise DiffprobeError(f"unknown device {cfg.device!r}; use cpu, cuda or cuda:N")
        if cfg.op_timer not in OP_TIMERS:
            raise DiffprobeError(f"unknown --op-timer {cfg.op_timer!r}; use one of {', '.join(OP_TIMERS)}")
        if cfg.mode not in MODES:
            raise DiffprobeError(f"unknown mode {cfg.mode!r}; use one of {', '.join(MODES)}")
        if cfg.dtype not in DTYPES:
            raise DiffprobeError(f"unknown dtype {cfg.dtype!r}; use one of {', '.join(DTYPES)}")
        if cfg.chrome_trace and (cfg.mode == "analytic" or not cfg.trace_ops):
            raise DiffprobeError("--chrome-trace needs a measured run with op tracing (--mode measured --trace)")
        if cfg.compile or cfg.cuda_graphs:
            _check_compile(cfg)
        if cfg.mode == "analytic":
            _check_analytic(cfg)
            cfg.sample_steps = 0  # every step is traced (replayed): the account covers the full run
        else:
            check_device(cfg.device, cfg.dtype)
        if cfg.sample_steps is None:
            cfg.sample_steps = 0 if cfg.device.startswith("cuda") else 3
        if cfg.mode == "measured":
            check_memory(spec, cfg.dtype, cfg.device)
        if cfg.weights is not None:
            cfg.weights = str(check_weights_path(cfg.weights, cfg.allow_pickle, spec))
        if cfg.hardware is not None:
            get_preset(cfg.hardware)  # an unknown or broken preset is refused before any work
        block = cfg.approx is not None and (parse_settings(cfg.approx).attention or ("",))[0] == "block"
        if cfg.mask_interval != 1 and not block:
            raise DiffprobeError(f"--mask-interval {cfg.mask_interval} applies to --approx block=TAU (it reuses the "
                                 "block method's predicted masks); leave it out otherwise")
        if cfg.mask_interval < 1:
            raise DiffprobeError(f"--mask-interval must be at least 1, got {cfg.mask_interval}")
        if cfg.approx is not None:
            setting = parse_settings(cfg.approx)
            if setting.attention is not None and (cfg.mode != "measured" or not cfg.trace_ops):
                raise DiffprobeError("--approx needs a measured run with op tracing for an attention method: "
                                     "which entries are skipped depends on the attention values")
            if not cfg.trace_ops:
                raise DiffprobeError("--approx needs op tracing: its account is the records of what ran")
            if setting.attention is not None:  # its parameters, checked before any work
                check_attention_model(spec.family, cfg.model, setting.attention[0])
                ApproxAttention(*setting.attention, mask_interval=cfg.mask_interval)
            if setting.reuse is not None:  # a method for another model family: refused first
                setting.reuse.check_spec(spec.pipeline_class, cfg.model)
            if setting.reuse is not None and setting.reuse.data_dependent and (
                    cfg.mode != "measured"):
                raise DiffprobeError(f"--approx {setting.reuse.name} decides from the activations which steps skip "
                                     "work: use --mode measured")
        return cfg


def analytic_twin(cfg: ProfileConfig, **changes) -> ProfileConfig:
    """The analytic run that counts what ``cfg`` executes: every step on the meta device, with nothing that times or
    changes attention (which analytic mode refuses), ``changes`` on top."""
    from dataclasses import replace

    return replace(cfg, mode="analytic", device="cpu", repeat=1, warmup=0, op_timer="clock", approx=None,
                   mask_interval=1, compile=False, cuda_graphs=False, chrome_trace=False, hardware=None,
                   sample_steps=0, **changes)


def _check_analytic(cfg: ProfileConfig) -> None:
    """Refuse what an analytic run cannot honour: timing options (nothing is timed) and a GPU that is absent."""
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DiffprobeError("--device cuda was asked for but no CUDA GPU is visible to torch (analytic mode runs "
                                 "on the meta device: leave --device out, and use --hardware for a GPU's roofline)")
    timing = [flag for flag, on in (("--op-timer profiler", cfg.op_timer != "clock"), (f"--repeat {cfg.repeat}",
                                    cfg.repeat != 1), (f"--warmup {cfg.warmup}", cfg.warmup != 0)) if on]
    if timing:
        raise DiffprobeError(f"{', '.join(timing)}: analytic mode times nothing (it counts on the meta device); "
                             "use --mode measured to time the run")


def _check_compile(cfg: ProfileConfig) -> None:
    """Refuse ``--compile`` / ``--cuda-graphs`` where they cannot run (one line each)."""
    from diffprobe.timing.compiled import compiler_unavailable

    if cfg.mode != "measured":
        raise DiffprobeError("--compile and --cuda-graphs time a real run: use --mode measured")
    if cfg.cuda_graphs and not cfg.device.startswith("cuda"):
        raise DiffprobeError("--cuda-graphs needs --device cuda (CUDA graphs capture and replay GPU work)")
    if cfg.approx is not None:
        raise DiffprobeError("--approx cannot be combined with --compile or --cuda-graphs (the approximate "
                             "attention runs eagerly); profile them as two runs and compare")
    if cfg.chrome_trace:
        raise DiffprobeError("--chrome-trace draws a traced eager run; with --compile the records carry the compiled "
                             "kernels' times: profile the trace without --compile")
    why = compiler_unavailable("cuda" if cfg.device.startswith("cuda") else "cpu")
    if why:
        raise DiffprobeError(f"--compile cannot run here: {why}")
    cfg.compile = True  # --cuda-graphs is a compiled run whose graphs are captured


def _seconds_source(cfg: ProfileConfig) -> str:
    """Where a measured run's per-record seconds come from (``seconds.source``)."""
    if cfg.cuda_graphs and cfg.trace_ops:
        return ("eager trace's per-op times (per-record times are not measurable inside a CUDA graph: the compiled "
                "run's time is per stage)")
    if cfg.compile and cfg.trace_ops:
        return ("compiled run: profiler time of each compiled kernel (device time on CUDA), attributed to the eager "
                "records through Inductor's provenance; uncompiled stages keep the eager per-op times")
    if not cfg.trace_ops:
        return "stage timer only (no op tracing)"
    if cfg.op_timer == "profiler":
        return ("profiler: device time of the kernels each op launched (CUPTI)" if cfg.device.startswith("cuda")
                else "profiler: CPU op events")
    return "clock: a mark before and after each op" + (" (CUDA events)" if cfg.device.startswith("cuda") else "")


def check_resolution(spec: ModelSpec, height: int, width: int, flags: tuple[str, str] | None = None) -> None:
    """Refuse an image size the model cannot take; ``flags`` name the two sides in the message (default: the
    resolution as the user wrote it in a list)."""
    for i, value in enumerate((height, width)):
        name = f"{flags[i]} {value}" if flags else f"resolution {height}x{width}"
        step = spec.size_multiple
        if value % step != 0:
            why = "the VAE downsamples by 8" if step == 8 else (
                f"{spec.name}'s VAE and patch grid need sides in steps of {step} px")
            raise DiffprobeError(f"{name} is not a multiple of {step} ({why})")
        if value < spec.min_resolution:
            raise DiffprobeError(f"{name} is below {spec.name}'s minimum of {spec.min_resolution} px")


WEIGHT_OVERHEAD = 1.15  # weights as loaded, plus the activations, workspaces and allocator slack of one step


def memory_estimate(spec: ModelSpec, dtype: str) -> tuple[int, int]:
    """(bytes a measured run needs, parameters): every component's weights in ``dtype`` (counted on the meta
    device) times :data:`WEIGHT_OVERHEAD`; a lower bound, since the largest activations come on top."""
    import torch

    comps = build_components(spec, "meta")
    params = sum(count_params(m) for m in comps.values() if hasattr(m, "parameters"))
    return int(params * getattr(torch, dtype).itemsize * WEIGHT_OVERHEAD), params


def check_memory(spec: ModelSpec, dtype: str, device: str, analytic: bool = True) -> None:
    """Refuse a measured run whose weights alone do not fit the device's available memory, naming the estimate
    and the ways out, before anything is built (``analytic``: whether the command has an analytic mode to offer)."""
    from diffprobe.hardware.environment import available_memory

    need, params = memory_estimate(spec, dtype)
    free = available_memory(device)
    if free is None or need <= free:
        return
    where = "GPU memory" if device.startswith("cuda") else "memory"
    ways = ["--mode analytic (no weights, every op counted)"] if analytic else []
    if dtype == "float32":
        ways.append("--dtype bfloat16 (half the bytes)")
    if not device.startswith("cuda"):
        ways.append("a GPU (--device cuda)")
    small = f"tiny-{spec.family}" if spec.family != "sd" else "tiny"
    if small != spec.name:
        ways.append(f"a smaller model (--model {small})")
    raise DiffprobeError(f"a measured {spec.name} run needs about {need / 2**30:.1f} GiB ({params / 1e9:.2f} G "
                         f"parameters in {dtype}, x{WEIGHT_OVERHEAD} for activations) but {free / 2**30:.1f} GiB of "
                         f"{where} are available; use " + (", ".join(ways) or "a machine with more memory"))


def check_device(device: str, dtype: str) -> None:
    """Refuse devices that are absent and dtypes this torch build cannot run there."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DiffprobeError("--device cuda was asked for but no CUDA GPU is visible to torch")
    elif device != "cpu":
        raise DiffprobeError(f"unknown device {device!r}; use cpu or cuda")
    tdtype = getattr(torch, dtype)
    try:  # the op classes of a diffusion model, tiny, in the asked dtype on the asked device
        x = torch.ones(1, 8, 4, 4, dtype=tdtype, device=device)
        w = torch.ones(8, 8, 3, 3, dtype=tdtype, device=device)
        y = torch.nn.functional.group_norm(torch.nn.functional.conv2d(x, w, padding=1), 4)
        q = y.flatten(2).transpose(1, 2).unsqueeze(1)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except (RuntimeError, NotImplementedError) as exc:
        raise DiffprobeError(f"{dtype} is not supported on {device} by this torch build ({exc})") from exc


@dataclass
class ProfileResult:
    """The outcome of :func:`profile`; ``to_dict()`` is what ``--format json`` prints and ``run.json`` holds."""

    config: ProfileConfig
    spec: ModelSpec
    params: dict[str, int]
    stages: dict[str, float]
    stage_stats: dict[str, dict[str, float]]
    steps: list[dict]
    unet_evals: int
    unet_evals_measured: int
    peak_memory_bytes: int
    peak_memory_kind: str
    environment: dict
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
            acc["seconds"]["source"] = _seconds_source(self.config)
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


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def build_pipeline(cfg: ProfileConfig, spec: ModelSpec):
    """The diffusers pipeline for a resolved config: on its device and dtype, or on ``meta`` (analytic)."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    dtype = _torch_dtype(cfg.dtype)
    if cfg.mode == "analytic":
        pipe = pipeline_from_components(spec, build_components(spec, "meta", cfg.seed)).to(dtype=dtype)
    else:
        if cfg.weights:
            pipe = load_pipeline(spec, cfg.weights, dtype=dtype, allow_pickle=cfg.allow_pickle)
        else:
            pipe = pipeline_from_components(spec, build_components(spec, "random", cfg.seed))
        pipe = pipe.to(cfg.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def initial_latents(cfg: ProfileConfig, pipe):
    """The starting noise, made exactly as the pipeline's own ``prepare_latents`` would (same generator call),
    or an empty meta tensor of that shape in analytic mode. Passing it in keeps noise generation out of the
    traced ops, so measured and analytic runs trace the same ops."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    channels = denoiser(pipe).config.in_channels
    scale = pipe.vae_scale_factor
    packs = hasattr(type(pipe), "_pack_latents")  # Flux: 2x2 latent patches packed into tokens
    if packs:
        channels //= 4
        scale *= 2
    side = 2 if packs else 1
    shape = (cfg.batch, channels, side * (cfg.height // scale), side * (cfg.width // scale))
    # the pipeline makes its latents in the prompt embeddings' dtype (that of the last text encoder); Sana in fp32
    dtype = torch.float32 if get_spec(cfg.model).family == "sana" else getattr(
        pipe, text_encoder_names(pipe)[-1]).dtype
    if cfg.mode == "analytic":
        latents = torch.empty(shape, dtype=dtype, device="meta")
    else:
        generator = torch.Generator(cfg.device).manual_seed(cfg.seed)
        latents = randn_tensor(shape, generator=generator, device=torch.device(cfg.device), dtype=dtype)
    return type(pipe)._pack_latents(latents, *shape) if packs else latents


def pipeline_kwargs(cfg: ProfileConfig, pipe) -> dict:
    """The arguments of the pipeline call that the profile makes (shared with the overhead benchmark).

    The image comes back as a tensor (``output_type="pt"``) and is turned into PIL outside the traced region,
    so measured and analytic runs trace the same post-processing ops.
    """
    import torch

    return dict(
        prompt=cfg.prompt,
        height=cfg.height,
        width=cfg.width,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        num_images_per_prompt=cfg.batch,
        generator=torch.Generator("cpu" if cfg.mode == "analytic" else cfg.device).manual_seed(cfg.seed),
        latents=initial_latents(cfg, pipe),
        output_type="pt",
        **get_spec(cfg.model).call_kwargs(),
    )


def to_pil(pipe, images) -> list:
    """PIL images from the pipeline's ``pt`` output, as ``output_type="pil"`` would have made them."""
    return pipe.image_processor.numpy_to_pil(pipe.image_processor.pt_to_numpy(images))


def prompt_notes(pipe, prompt: str, max_sequence_length: int | None = None) -> list[str]:
    """A warning for each tokenizer that cuts the prompt (as the pipeline does, silently in diffprobe's output
    otherwise): how many tokens it has and how many its text encoder takes — CLIP's 77, or for a T5 / Gemma
    encoder the pipeline's ``max_sequence_length`` (16 on tiny-flux)."""
    notes, said = [], set()
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tok = getattr(pipe, name, None)
        if tok is None:
            continue
        encoder = type(getattr(pipe, name.replace("tokenizer", "text_encoder"), None)).__name__
        clip = encoder.startswith("CLIP")
        limit = tok.model_max_length if clip or max_sequence_length is None else max_sequence_length
        n = len(tok(prompt, truncation=False).input_ids)
        kind = "CLIP" if clip else encoder.replace("EncoderModel", "").replace("Model", "")
        if n > limit and (kind, n, limit) not in said:  # SDXL's two CLIP tokenizers cut at one place: said once
            said.add((kind, n, limit))
            notes.append(f"the prompt is {n} tokens for {name} ({kind}); its text encoder takes {limit}, so the "
                         f"last {n - limit} are cut (as the pipeline does)")
    return notes


def stand_in_notes(pipe) -> list[str]:
    """A line for each tokenizer of the run that is a stand-in (no shipped vocabulary): what it changes."""
    from diffprobe.models.tokenizer import STAND_IN_NOTE

    return [f"{name}: {STAND_IN_NOTE}" for name in ("tokenizer", "tokenizer_2", "tokenizer_3")
            if getattr(getattr(pipe, name, None), "stand_in", False)]


def _count_unet_evals(pipe, steps: int, device: str) -> int:
    import copy

    return _schedule_length(copy.deepcopy(pipe.scheduler), steps, device)


def _schedule_length(sched, steps: int, device: str = "cpu") -> int:
    """How many denoiser evaluations ``steps`` make on scheduler ``sched`` (set up in place); a count the
    scheduler refuses is a :class:`DiffprobeError` naming the scheduler's limit."""
    try:
        if getattr(sched.config, "use_dynamic_shifting", False):  # Flux: the shift moves the steps, not their count
            sched.set_timesteps(steps, device=device, mu=1.0)
        else:
            sched.set_timesteps(steps, device=device)
    except ValueError as exc:
        limit = getattr(sched.config, "num_train_timesteps", None)
        raise DiffprobeError(f"--steps {steps} is more than {type(sched).__name__} can take" + (
            f" (at most {limit}, its training timesteps)" if limit else f" ({' '.join(str(exc).split())})")) from None
    return len(sched.timesteps)


# pipelines that cannot run one step: diffusers' PixArt pipelines read a second output of scheduler.step() when
# num_inference_steps == 1, which their DPM-Solver scheduler does not return (IndexError)
ONE_STEP_UNSUPPORTED = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")


def check_steps(spec: ModelSpec, steps: int) -> None:
    """Refuse, before anything is built, a step count the model's scheduler or pipeline cannot run."""
    if steps == 1 and spec.pipeline_class in ONE_STEP_UNSUPPORTED:
        raise DiffprobeError(f"--steps 1: diffusers' {spec.pipeline_class} cannot run a single step (it reads a "
                             "second output its DPM-Solver scheduler does not return); use --steps 2 or more")
    _schedule_length(build_scheduler(spec), steps)


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
    try:
        report("build", 0, 1)
        pipe = pipe or build_pipeline(cfg, spec)
        report("build", 1, 1)
        reuse = parse_settings(cfg.approx).reuse if cfg.approx else None
        if reuse is not None:  # a method for another model family is refused before any work
            reuse.check_model(pipe, cfg.model)
        params = {name: count_params(getattr(pipe, name)) for name in (*TEXT_ENCODERS, *DENOISERS, "vae")
                  if getattr(pipe, name, None) is not None}
        unet_evals = _count_unet_evals(pipe, cfg.steps, "cpu")
        notes = prompt_notes(pipe, cfg.prompt, spec.max_sequence_length) + stand_in_notes(pipe)
    except KeyboardInterrupt as exc:  # the folder says what happened, even with nothing measured
        empty = ProfileResult(cfg, spec, {}, {}, {}, [], 0, 0, 0, "", env, run_dir=str(out_dir),
                              status="interrupted", error=f"interrupted ({interruption(exc)}) while building the "
                              "pipeline; nothing was measured")
        _save(out_dir, empty)
        raise
    measured_evals = unet_evals if cfg.sample_steps == 0 else min(cfg.sample_steps, unet_evals)
    result = ProfileResult(cfg, spec, params, {}, {}, [], unet_evals, measured_evals, 0, "", env,
                           run_dir=str(out_dir), notes=notes)
    if cfg.mode == "analytic":
        try:
            _run_analytic(cfg, pipe, result, report)
            if cfg.approx is not None:  # reuse only (checked): its plan replayed on meta
                _run_approx_pass(cfg, pipe, result, report)
        except KeyboardInterrupt as exc:
            result.status, result.error = "interrupted", f"interrupted ({interruption(exc)}) while tracing"
            _save(out_dir, result)
            raise
    else:
        _run_measured(cfg, pipe, result, report, out_dir)
        if cfg.compile:
            try:
                _run_compiled(cfg, pipe, result, report, out_dir)
            except BaseException as exc:  # the eager run is measured: it is written before the error propagates
                interrupted = isinstance(exc, KeyboardInterrupt)
                result.status = "interrupted" if interrupted else "failed"
                result.error = (f"interrupted ({interruption(exc)})" if interrupted else
                                f"{type(exc).__name__}: {exc}") + (
                    " in the compiled run; the eager run is complete")
                _save(out_dir, result)
                raise
        if cfg.approx is not None and result.ops is not None:
            try:
                _run_approx_pass(cfg, pipe, result, report)
            except KeyboardInterrupt as exc:
                result.status = "interrupted"
                result.error = f"interrupted ({interruption(exc)}) in the --approx pass; the dense run is complete"
                _save(out_dir, result)
                raise
    _save(out_dir, result)
    return result


def _run_approx_pass(cfg: ProfileConfig, pipe, result: ProfileResult, report) -> None:
    """The same run with the ``--approx`` setting: attention approximation, step-level reuse, or both.

    With reuse, the run is traced again with the method installed (its account is the records of what ran);
    then dense and the setting are timed untraced, on the same noise. Approximate attention re-weights the
    attention records by each call's kept fraction. ``result.approx`` holds the account against dense (by stage
    and layer type), the per-step view of which UNet blocks ran, and the seconds of both untraced runs."""
    import contextlib
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
        return ProfileResult(c, result.spec, result.params, {}, {}, [], result.unet_evals, evals, 0, "",
                             result.environment)

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
    scratch = ProfileResult(plain, result.spec, result.params, {}, {}, [], result.unet_evals,
                            result.unet_evals_measured, 0, "", result.environment)
    with capture, tempfile.TemporaryDirectory(prefix="diffprobe-compile-") as tmp:
        report("eager run", 0, 1)
        if cfg.trace_ops:  # the traced run's stage times carry the tracer's cost: time eager untraced too
            _run_measured(plain, pipe, scratch, lambda *_: None, Path(tmp))
        else:
            scratch.stages = result.stages
        eager = {"stages": dict(scratch.stages), "stages_source": "untraced eager run (same --repeat, --warmup)",
                 "by_layer_type": dict(eager_seconds.get("by_layer_type", {})),
                 "by_layer_type_source": _seconds_source(replace(cfg, compile=False, cuda_graphs=False))
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
    import contextlib

    cfg = cfg.resolved()
    spec = get_spec(cfg.model)
    pipe = build_pipeline(cfg, spec)
    result = ProfileResult(cfg, spec, {}, {}, {}, [], 0, 0, 0, "", {})
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
    import contextlib

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
