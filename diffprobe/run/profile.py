"""``diffprobe profile``: one instrumented text-to-image run, timed per stage.

The run is the computation users run (diffusers' own pipeline: tokenizer -> text encoder(s) -> denoising loop
with classifier-free guidance -> VAE decode). On a CPU a full 50-step run takes minutes, so by default only the
first ``sample_steps`` denoising steps are executed (the loop is interrupted through diffusers' own
``callback_on_step_end`` mechanism, and the VAE still decodes) and the full-run time is reported separately, as a
labelled projection: every step runs the same UNet on same-shaped tensors, so per-step cost is step-invariant.
"""

from __future__ import annotations

import resource
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import (
    ModelSpec,
    build_components,
    check_weights_path,
    count_params,
    get_spec,
    load_pipeline,
    pipeline_from_components,
)
from diffprobe.run.environment import environment
from diffprobe.run.stages import STAGE_ORDER, StageTimer

SCHEMA_VERSION = 1
DTYPES = ("float32", "float16", "bfloat16")
RANDOM_WEIGHTS_NOTE = "architecture-only: timings and FLOPs are real, image content and sparsity are not"
DEFAULT_PROMPT = "a photo of an astronaut riding a horse on mars"


@dataclass
class ProfileConfig:
    """Everything that defines a profile run. ``None`` means the model's default."""

    model: str = "sd21-base"
    prompt: str = DEFAULT_PROMPT
    height: int | None = None
    width: int | None = None
    steps: int = 50
    batch: int = 1
    guidance: float = 7.5
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    weights: str | None = None
    allow_pickle: bool = False
    repeat: int = 1
    warmup: int = 0
    sample_steps: int | None = None  # denoising steps actually executed; None: 3 on CPU, all on CUDA; 0: all
    out: str | None = None

    def resolved(self) -> "ProfileConfig":
        """A copy with defaults filled in and every field validated (raises :class:`DiffprobeError`)."""
        spec = get_spec(self.model)
        cfg = ProfileConfig(**asdict(self))
        cfg.height = cfg.height or spec.native_resolution
        cfg.width = cfg.width or spec.native_resolution
        for side, value in (("height", cfg.height), ("width", cfg.width)):
            if value % 8 != 0:
                raise DiffprobeError(f"--{side} {value} is not a multiple of 8 (the VAE downsamples by 8)")
            if value < spec.min_resolution:
                raise DiffprobeError(f"--{side} {value} is below {spec.name}'s minimum of {spec.min_resolution} px")
        for flag, value, low in (("steps", cfg.steps, 1), ("batch", cfg.batch, 1), ("repeat", cfg.repeat, 1),
                                 ("warmup", cfg.warmup, 0)):
            if value < low:
                raise DiffprobeError(f"--{flag} must be at least {low}, got {value}")
        if cfg.sample_steps is not None and cfg.sample_steps < 0:
            raise DiffprobeError(f"--sample-steps must be 0 (all) or more, got {cfg.sample_steps}")
        if cfg.dtype not in DTYPES:
            raise DiffprobeError(f"unknown dtype {cfg.dtype!r}; use one of {', '.join(DTYPES)}")
        check_device(cfg.device, cfg.dtype)
        if cfg.sample_steps is None:
            cfg.sample_steps = 0 if cfg.device.startswith("cuda") else 3
        if cfg.weights is not None:
            cfg.weights = str(check_weights_path(cfg.weights, cfg.allow_pickle))
        return cfg


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
    extra: dict = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        return self.config.weights is None and not self.spec.trained

    def projection(self) -> dict | None:
        """Full-run time projected from the measured steps, or ``None`` when every step ran."""
        if self.unet_evals_measured >= self.unet_evals or not self.steps:
            return None
        per_step = statistics.median(s["unet_s"] for s in self.steps)
        per_sched = statistics.median(s["scheduler_s"] for s in self.steps)
        stages = dict(self.stages)
        stages["unet"] = per_step * self.unet_evals
        stages["scheduler"] = per_sched * self.unet_evals
        stages.pop("total", None)
        return {
            "label": "projection (not a measurement): measured per-step median x full step count",
            "unet_evals_measured": self.unet_evals_measured,
            "unet_evals_full": self.unet_evals,
            "stages": stages,
            "total_s": sum(stages.values()),
        }

    def to_dict(self) -> dict:
        c = self.config
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "profile",
            "status": self.status,
            "error": self.error,
            "model": c.model,
            "model_title": self.spec.title,
            "weights": c.weights or ("embedded" if self.spec.trained else "random"),
            "random_weights": self.random_weights,
            "note": RANDOM_WEIGHTS_NOTE if self.random_weights else None,
            "prompt": c.prompt,
            "height": c.height,
            "width": c.width,
            "steps": c.steps,
            "unet_evals": self.unet_evals,
            "unet_evals_measured": self.unet_evals_measured,
            "batch": c.batch,
            "guidance": c.guidance,
            "cfg": c.guidance > 1,
            "seed": c.seed,
            "device": c.device,
            "dtype": c.dtype,
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
            **self.extra,
        }


def prepare_out_dir(out: str | None, model: str) -> Path:
    """Create (or accept) the run folder and prove it is writable before any heavy work."""
    import datetime

    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = f"runs/{stamp}-{model}"
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DiffprobeError(f"cannot write to --out {path}: {exc.strerror or exc}") from exc
    return path


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def build_pipeline(cfg: ProfileConfig, spec: ModelSpec):
    """The diffusers pipeline for a resolved config, on its device and dtype."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    if cfg.weights:
        pipe = load_pipeline(spec, cfg.weights, dtype=_torch_dtype(cfg.dtype), allow_pickle=cfg.allow_pickle)
    else:
        pipe = pipeline_from_components(spec, build_components(spec, "random", cfg.seed))
    pipe = pipe.to(cfg.device, _torch_dtype(cfg.dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_kwargs(cfg: ProfileConfig, pipe) -> dict:
    """The arguments of the pipeline call that the profile makes (shared with the overhead benchmark)."""
    import torch

    return dict(
        prompt=cfg.prompt,
        height=cfg.height,
        width=cfg.width,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.guidance,
        num_images_per_prompt=cfg.batch,
        generator=torch.Generator(cfg.device).manual_seed(cfg.seed),
        output_type="pil",
    )


def _count_unet_evals(pipe, steps: int, device: str) -> int:
    import copy

    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps, device=device)
    return len(sched.timesteps)


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
        {"step": i, "unet_s": statistics.median(d.get("unet", [0.0])),
         "scheduler_s": statistics.median(d.get("scheduler", [0.0]))}
        for i, d in sorted(per_step.items())
    ]
    return stages, stats, steps


def run_profile(cfg: ProfileConfig, progress=None, pipe=None) -> ProfileResult:
    """Run the profile described by a (resolved or not) config; see :func:`diffprobe.profile`.

    ``progress(stage, done, total)`` is called as work advances. A failure after measuring started still
    writes ``run.json`` (status ``failed``) with everything measured so far, then raises.
    """
    import torch

    from diffprobe.records.runfolder import write_run_json

    cfg = cfg.resolved()
    spec = get_spec(cfg.model)
    out_dir = prepare_out_dir(cfg.out, cfg.model)
    report = progress or (lambda *_: None)

    report("build", 0, 1)
    pipe = pipe or build_pipeline(cfg, spec)
    report("build", 1, 1)
    params = {name: count_params(getattr(pipe, name)) for name in ("text_encoder", "text_encoder_2", "unet", "vae")
              if getattr(pipe, name, None) is not None}
    unet_evals = _count_unet_evals(pipe, cfg.steps, cfg.device)
    measured_evals = unet_evals if cfg.sample_steps == 0 else min(cfg.sample_steps, unet_evals)

    runs: list[list] = []
    result = ProfileResult(cfg, spec, params, {}, {}, [], unet_evals, measured_evals, 0, "", environment(cfg.device),
                           run_dir=str(out_dir))
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timer = StageTimer(pipe, cfg.device)
    total_runs = cfg.warmup + cfg.repeat
    images = None
    try:
        with timer, torch.inference_mode():
            for run_idx in range(total_runs):
                timer.clear()

                def on_step_end(p, i, t, kw, run_idx=run_idx):
                    report("denoise", i + 1 + run_idx * measured_evals, measured_evals * total_runs)
                    if i + 1 >= measured_evals:
                        p._interrupt = True  # diffusers' own early-stop: remaining steps skipped, VAE still decodes
                    return kw

                start = timer.mark()
                images = pipe(**pipeline_kwargs(cfg, pipe), callback_on_step_end=on_step_end).images
                end = timer.mark()
                events = timer.events()
                total = timer.clock.seconds(start, end)
                from diffprobe.run.stages import StageEvent

                events.append(StageEvent("other", None, max(0.0, total - sum(e.seconds for e in events))))
                events.append(StageEvent("total", None, total))
                if run_idx >= cfg.warmup:
                    runs.append(events)
    except Exception as exc:
        in_flight = timer.events()  # the interrupted run's finished stages: measured, so kept
        partial = runs + ([in_flight] if in_flight else [])
        if partial:
            result.stages, result.stage_stats, result.steps = summarize_events(partial)
        result.peak_memory_bytes, result.peak_memory_kind = _peak_memory(cfg.device)
        if _is_oom(exc):
            stage = timer.failed_stage or timer.current_stage or "pipeline"
            msg = (f"out of memory in stage {stage} at {cfg.height}x{cfg.width}, batch {cfg.batch}; "
                   "try a smaller --height/--width or --batch")
        else:
            msg = f"run failed in stage {timer.failed_stage or timer.current_stage or 'pipeline'}: {type(exc).__name__}: {exc}"
        result.status, result.error = "failed", msg
        write_run_json(out_dir, result.to_dict())
        if _is_oom(exc):
            raise DiffprobeError(msg + f" (partial results in {out_dir / 'run.json'})") from exc
        raise
    result.stages, result.stage_stats, result.steps = summarize_events(runs)
    result.peak_memory_bytes, result.peak_memory_kind = _peak_memory(cfg.device)
    if images:
        names = []
        for i, img in enumerate(images):
            name = "image.png" if len(images) == 1 else f"image_{i}.png"
            img.save(out_dir / name)
            names.append(name)
        result.image = names[0]
        result.extra["images"] = names
        result.extra["image_complete"] = measured_evals >= unet_evals
    write_run_json(out_dir, result.to_dict())
    return result
