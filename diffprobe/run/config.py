"""The configuration of a profile run (:class:`ProfileConfig`) and the checks that refuse, in one line each and
before anything is built, what a run cannot do: sizes, steps, devices, dtypes, memory, option combinations."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from diffprobe.attention.approx import ApproxAttention
from diffprobe.attention.approx import check_model as check_attention_model
from diffprobe.errors import DiffprobeError
from diffprobe.hardware.presets import get_preset
from diffprobe.models.registry import (
    DEFAULT_PROMPT,
    ModelSpec,
    build_scheduler,
    get_spec,
    list_models,
    module_components,
    module_summary,
)
from diffprobe.models.schedulers import check_scheduler
from diffprobe.models.weights import check_weights_path
from diffprobe.run.settings import parse_settings

DTYPES = ("float32", "float16", "bfloat16")
MODES = ("measured", "analytic")
OP_TIMERS = ("clock", "profiler")
RANDOM_WEIGHTS_NOTE = "architecture-only: timings and FLOPs are real, image content and sparsity are not"
ANALYTIC_NOTE = ("analytic: counted on the meta device with no weights and no compute: FLOPs and bytes are exact, "
                 "nothing was timed and no image was drawn")
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


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
    scheduler: str | None = None  # --scheduler NAME (models/schedulers.py); None: the model's own
    frames: int | None = None  # video models: frames to generate (None: the model's default); image models: None

    @property
    def random_weights(self) -> bool:
        """Whether this run's weights are random (no ``--weights``, and the model has no trained embedded ones):
        its timings and FLOPs are real, its image content and attention sparsity are not."""
        return self.weights is None and not get_spec(self.model).trained

    def resolved(self) -> "ProfileConfig":
        """A copy with defaults filled in and every field validated (raises :class:`DiffprobeError`)."""
        spec = get_spec(self.model)
        cfg = ProfileConfig(**asdict(self))
        _check_size_and_fill(cfg, spec)
        _check_numbers(cfg, spec)
        _check_names(cfg)
        if cfg.compile or cfg.cuda_graphs:
            check_one_expert(spec, "--compile")
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
        _check_approx(cfg, spec)
        return cfg


def _check_size_and_fill(cfg: ProfileConfig, spec) -> None:
    """The image size (the model's native size by default), the steps and guidance (the model's by default)."""
    for side in ("height", "width"):
        value = getattr(cfg, side)
        if value is not None and value <= 0:
            raise DiffprobeError(f"--{side} must be a positive number of px, got {value} (leave it out for "
                                 f"{spec.name}'s native {spec.native_resolution} px)")
    if cfg.steps is None:
        cfg.steps = spec.default_steps
    cfg.height = cfg.height if cfg.height is not None else (spec.native_height or spec.native_resolution)
    cfg.width = cfg.width if cfg.width is not None else spec.native_resolution
    check_resolution(spec, cfg.height, cfg.width, ("--height", "--width"))
    cfg.frames = check_frames(spec, cfg.frames)
    if cfg.guidance is None:
        cfg.guidance = spec.default_guidance


def _check_numbers(cfg: ProfileConfig, spec) -> None:
    for flag, value, low in (("steps", cfg.steps, 1), ("batch", cfg.batch, 1), ("repeat", cfg.repeat, 1),
                             ("warmup", cfg.warmup, 0)):
        if value < low:
            raise DiffprobeError(f"--{flag} must be at least {low}, got {value}")
    if not 0 <= cfg.seed <= SEED_MAX:
        raise DiffprobeError(f"--seed must be between 0 and {SEED_MAX} (2^63 - 1), got {cfg.seed}")
    if cfg.scheduler is not None:
        check_scheduler(cfg.scheduler, spec.family, cfg.model)
    check_steps(spec, cfg.steps, cfg.scheduler)
    if not (math.isfinite(cfg.guidance) and cfg.guidance >= 0):
        raise DiffprobeError(f"--guidance must be a finite number >= 0 (1 or less: no classifier-free "
                             f"guidance), got {cfg.guidance}")
    if cfg.sample_steps is not None and cfg.sample_steps < 0:
        raise DiffprobeError(f"--sample-steps must be 0 (all) or more, got {cfg.sample_steps}")


def _check_names(cfg: ProfileConfig) -> None:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
        raise DiffprobeError(f"unknown device {cfg.device!r}; use cpu, cuda or cuda:N")
    for what, value, known in (("--op-timer", cfg.op_timer, OP_TIMERS), ("mode", cfg.mode, MODES),
                               ("dtype", cfg.dtype, DTYPES)):
        if value not in known:
            raise DiffprobeError(f"unknown {what} {value!r}; use one of {', '.join(known)}")
    if cfg.chrome_trace and (cfg.mode == "analytic" or not cfg.trace_ops):
        raise DiffprobeError("--chrome-trace needs a measured run with op tracing (--mode measured --trace)")


def check_one_expert(spec: ModelSpec, what: str) -> None:
    """Refuse ``what`` (a method installed on the denoiser) on a model whose pipeline switches between two
    denoisers (Wan 2.2): it would act on the first expert's calls only."""
    if spec.experts > 1:
        raise DiffprobeError(f"{what}: {spec.name} switches between {spec.experts} denoiser experts over its steps; "
                             f"{what} acts on one denoiser and is not yet available there (profile and sweep are)")


def _check_approx(cfg: ProfileConfig, spec) -> None:
    """``--approx`` and ``--mask-interval``: a setting the run can account, its parameters checked before any work."""
    setting = parse_settings(cfg.approx) if cfg.approx is not None else None
    if setting is not None:
        check_one_expert(spec, "--approx")
    block = setting is not None and (setting.attention or ("",))[0] == "block"
    if cfg.mask_interval != 1 and not block:
        raise DiffprobeError(f"--mask-interval {cfg.mask_interval} applies to --approx block=TAU (it reuses the "
                             "block method's predicted masks); leave it out otherwise")
    if cfg.mask_interval < 1:
        raise DiffprobeError(f"--mask-interval must be at least 1, got {cfg.mask_interval}")
    if setting is None:
        return
    if setting.attention is not None and (cfg.mode != "measured" or not cfg.trace_ops):
        raise DiffprobeError("--approx needs a measured run with op tracing for an attention method: "
                             "which entries are skipped depends on the attention values")
    if not cfg.trace_ops:
        raise DiffprobeError("--approx needs op tracing: its account is the records of what ran")
    if setting.attention is not None:  # its parameters, checked before any work
        check_attention_model(spec.family, cfg.model, setting.attention[0])
        ApproxAttention(*setting.attention, mask_interval=cfg.mask_interval)
    if setting.reuse is not None:  # a method for another model family: refused first
        setting.reuse.check_spec(spec.family, cfg.model)
        if setting.reuse.data_dependent and cfg.mode != "measured":
            raise DiffprobeError(f"--approx {setting.reuse.name} decides from the activations which steps skip "
                                 "work: use --mode measured")


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


def seconds_source(cfg: ProfileConfig) -> str:
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
    if spec.denoiser != "unet":
        why = spec.family.size_problem(spec.config("transformer"), height, width)
        if why:
            raise DiffprobeError(f"{spec.name}: {why}")


def check_frames(spec: ModelSpec, frames: int | None) -> int | None:
    """The frames of a run: a video model's default, or ``frames`` where its VAE can take it (one more than a
    multiple of its temporal compression); refused, in one line, for an image model or a count the VAE cannot
    take."""
    if not spec.video:
        if frames is not None:
            raise DiffprobeError(f"--frames applies to video models; {spec.name} makes images (video models: "
                                 + ", ".join(s.name for s in list_models() if s.video) + ")")
        return None
    if frames is None:
        return spec.default_frames
    k = spec.family.temporal_compression
    if frames < 1 or (frames - 1) % k:
        low = max(1, (frames - 1) // k * k + 1)
        raise DiffprobeError(f"--frames {frames}: {spec.name}'s VAE compresses {k} frames into one latent frame after "
                             f"the first, so frames must be {k}k+1 (e.g. {low} or {low + k})")
    return frames


WEIGHT_OVERHEAD = 1.15  # weights as loaded, plus the activations, workspaces and allocator slack of one step


def memory_estimate(spec: ModelSpec, dtype: str) -> tuple[int, int]:
    """(bytes a measured run needs, parameters): every component's weights in ``dtype`` (counted on the meta
    device) times :data:`WEIGHT_OVERHEAD`; a lower bound, since the largest activations come on top."""
    import torch

    params = sum(module_summary(spec, c)[1] for c in module_components(spec))
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
    small = spec.family.tiny
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


def schedule_length(sched, steps: int, device: str = "cpu") -> int:
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


def check_steps(spec: ModelSpec, steps: int, scheduler: str | None = None) -> None:
    """Refuse, before anything is built, a step count the model's scheduler or pipeline cannot run."""
    if steps < spec.family.min_steps:
        raise DiffprobeError(f"--steps {steps}: diffusers' {spec.pipeline_class} cannot run fewer than "
                             f"{spec.family.min_steps} ({spec.family.min_steps_why}); use --steps "
                             f"{spec.family.min_steps} or more")
    schedule_length(build_scheduler(spec, scheduler), steps)
