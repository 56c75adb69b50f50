"""The ``diffprobe`` command: a thin shell over the Python API. Only this module prints.

Each command imports what it calls inside its function: ``--help``, ``--version`` and argument errors then answer
in about a tenth of a second, without loading torch and diffusers (seconds).
"""

from __future__ import annotations

import os
import sys

# transformers warns at import time about optional image processors we never use; keep stderr for our errors
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from diffprobe.errors import DiffprobeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Workload characterization of text-to-image diffusion inference.")


def _version(value: bool) -> None:
    if value:
        from diffprobe import __version__

        sys.stdout.write(f"diffprobe {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Workload characterization of text-to-image diffusion inference."""
# piped output (files, README tours) gets a wide fixed width instead of rich's 80-column fallback
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    json = "json"


class Mode(str, Enum):
    measured = "measured"
    analytic = "analytic"


class Dtype(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


def _print_json(data: dict) -> None:
    from diffprobe.records.runfolder import dumps

    sys.stdout.write(dumps(data) + "\n")


def _progress(quiet: bool):
    """A rich progress bar on stderr, as a ``progress(stage, done, total)`` callback and a context manager."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True, disable=quiet or not err.is_terminal)
    tasks: dict[str, int] = {}

    def callback(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, callback


# options shared by `profile` and `sweep` (one declaration each)
O_MODEL = typer.Option("sd21-base", help="Architecture (see `diffprobe models`).")
O_PROMPT = typer.Option(None, help="Text prompt (default: \"a photo of an astronaut riding a horse on mars\"; "
                        "digits: \"a handwritten seven\").", show_default=False)
O_STEPS = typer.Option(None, help="Denoising steps of the full run (default: the model's pipeline's own: 50 for "
                       "SD, 20 PixArt and Sana, 28 SD3 and FLUX.1-dev, 4 FLUX.1-schnell).")
O_GUIDANCE = typer.Option(None, help="CFG scale, finite and >= 0; 1 or less disables classifier-free guidance "
                          "(default: the model's, 7.5; digits 4.0).", show_default=False)
O_SEED = typer.Option(0, help="Seed for weights and noise, 0 to 2^63 - 1.")
O_DEVICE = typer.Option("cpu", help="cpu, cuda or cuda:N.")
O_DTYPE = typer.Option(Dtype.float32, help="Compute dtype.")
O_WEIGHTS = typer.Option(None, help="Local diffusers folder or .safetensors file.")
O_PICKLE = typer.Option(False, help="Allow pickle checkpoints (.ckpt/.bin/.pt): only if trusted.")
O_REPEAT = typer.Option(1, help="Measured runs (median/min/max reported).")
O_WARMUP = typer.Option(0, help="Unmeasured runs before the measured ones.")
O_SAMPLE = typer.Option(None, help="Denoising steps actually executed per run (0: all). Default: 3 on CPU, all on "
                        "CUDA; the full-run time is then a labelled projection.")
O_MODE = typer.Option(Mode.measured, help="measured: run it, timed; analytic: meta device, no compute.")
O_TRACE = typer.Option(True, "--trace/--no-trace",
                       help="Measured mode: record every op (FLOPs, bytes, time) or only stage times.")
O_HARDWARE = typer.Option(None, "--hardware", help="Hardware preset for the roofline (see `diffprobe hardware "
                          "list`; this-cpu is measured), or a path to a preset .toml file.")
O_FORMAT = typer.Option(Format.table, "--format", help="table or json.")
O_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
O_FORCE = typer.Option(False, "--force", help="Replace the diffprobe results in a non-empty --out folder.")


def _quiet_profiler(quiet: bool) -> None:
    """With --quiet, kineto (torch.profiler's library) keeps its start/stop lines off stderr too: it reads its log
    level when torch loads, which the commands do after parsing (an explicit KINETO_LOG_LEVEL is kept)."""
    if quiet:
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")


def _base_config(**kw):
    from diffprobe.run.profile import DEFAULT_PROMPT, ProfileConfig

    kw["prompt"] = kw["prompt"] if kw["prompt"] is not None else DEFAULT_PROMPT
    kw["dtype"] = kw["dtype"].value
    kw["mode"] = kw["mode"].value
    return ProfileConfig(**kw)


def _warn(lines) -> None:
    for line in lines:  # one line each, never wrapped to the terminal's width
        sys.stderr.write(f"diffprobe: warning: {line}\n")


@app.command()
def profile(
    model: str = O_MODEL,
    prompt: Optional[str] = O_PROMPT,
    height: Optional[int] = typer.Option(None, help="Image height in px (default: the model's native size)."),
    width: Optional[int] = typer.Option(None, help="Image width in px (default: the model's native size)."),
    steps: Optional[int] = O_STEPS,
    batch: int = typer.Option(1, help="Images per prompt."),
    guidance: Optional[float] = O_GUIDANCE,
    seed: int = O_SEED,
    device: str = O_DEVICE,
    dtype: Dtype = O_DTYPE,
    weights: Optional[str] = O_WEIGHTS,
    allow_pickle: bool = O_PICKLE,
    repeat: int = O_REPEAT,
    warmup: int = O_WARMUP,
    sample_steps: Optional[int] = O_SAMPLE,
    out_dir: Optional[str] = typer.Option(None, "--out", help="Run folder, new or empty (default: "
                                          "runs/<time>-<model>)."),
    force: bool = O_FORCE,
    mode: Mode = O_MODE,
    trace: bool = O_TRACE,
    op_timer: str = typer.Option("clock", "--op-timer", help="Per-op times: clock (a mark before and after each op) "
                                 "or profiler (torch.profiler events joined to the ops; on CUDA, kernel time)."),
    chrome_trace: bool = typer.Option(False, "--chrome-trace",
                                      help="Measured mode: also write trace.json for Perfetto / chrome://tracing."),
    compile_: bool = typer.Option(False, "--compile", help="Also run the UNet and VAE decoder under torch.compile "
                                  "(Inductor): stage times and per-op kernel times of the compiled run, the eager "
                                  "run's beside, compile time apart."),
    cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="CUDA: the compiled run replays CUDA graphs "
                                     "(implies --compile; its time is per stage)."),
    hardware: Optional[str] = O_HARDWARE,
    approx: Optional[str] = typer.Option(
        None, help="METHOD=VALUE[+METHOD=VALUE]: attention (threshold=0.01, topk=16, predicted=0.01, block=0.9) "
        "and/or step reuse (deepcache=3, tgate=10; Flux: pab=2, taylorseer=3, ...): run again with it and show its "
        "account beside dense."),
    mask_interval: int = typer.Option(1, "--mask-interval", help="--approx block=τ: predict a layer's block mask "
                                      "every N steps and reuse it in between (no predictor on those steps)."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Profile one text-to-image run: time, FLOPs and bytes per stage and layer type, parameters, memory."""
    _quiet_profiler(quiet)
    from diffprobe.run.profile import run_profile

    cfg = _base_config(model=model, prompt=prompt, height=height, width=width, steps=steps, batch=batch,
                       guidance=guidance, seed=seed, device=device, dtype=dtype, weights=weights,
                       allow_pickle=allow_pickle, repeat=repeat, warmup=warmup, sample_steps=sample_steps,
                       out=out_dir, mode=mode, trace_ops=trace, chrome_trace=chrome_trace, hardware=hardware,
                       approx=approx, force=force, op_timer=op_timer, compile=compile_, cuda_graphs=cuda_graphs,
                       mask_interval=mask_interval)
    cfg = cfg.resolved()
    bar, callback = _progress(quiet)
    with bar:
        result = run_profile(cfg, progress=callback)
        callback("report", 0, 1)
        report_path = _build_report(result.run_dir)
    d = result.to_dict()
    _warn(d.get("warnings", []))
    if fmt is Format.json:
        _print_json(d)
    else:
        from diffprobe.report.text import profile_items

        for item in profile_items(d):
            out.print(item)
        out.print(f"report: {report_path}")


@app.command()
def sweep(
    model: str = O_MODEL,
    resolutions: str = typer.Option("256,512,768,1024,1536,2048",
                                    help="Comma list of image sides (N or HxW), each a multiple of 8."),
    batch: str = typer.Option("1", help="Comma list of batch sizes."),
    prompt: Optional[str] = O_PROMPT,
    steps: Optional[int] = O_STEPS,
    guidance: Optional[float] = O_GUIDANCE,
    seed: int = O_SEED,
    device: str = O_DEVICE,
    dtype: Dtype = O_DTYPE,
    weights: Optional[str] = O_WEIGHTS,
    allow_pickle: bool = O_PICKLE,
    repeat: int = O_REPEAT,
    warmup: int = O_WARMUP,
    sample_steps: Optional[int] = O_SAMPLE,
    mode: Mode = typer.Option(Mode.analytic, help="analytic: meta device, seconds per point; measured: run it."),
    trace: bool = O_TRACE,
    hardware: Optional[str] = O_HARDWARE,
    approx: Optional[str] = typer.Option(None, help="METHOD=VALUE[+METHOD=VALUE] accounted at every point beside "
                                         "dense (see profile --approx; attention methods need a measured sweep)."),
    max_point_seconds: Optional[float] = typer.Option(
        None, help="Measured: skip a point whose roofline time on --hardware (this-cpu on CPU) exceeds this."),
    accel: Optional[str] = typer.Option(None, "--accel", help="Accelerator presets (comma list, see `diffprobe "
                                        "accel`): each point's latency and energy on them."),
    accel_density: Optional[float] = typer.Option(None, "--accel-density", help="Kept self-attention share, in "
                                                  "(0, 1], for --accel presets that skip attention."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Sweep folder (default: runs/<time>-sweep-<model>); "
                                          "re-running the same command with the same --out resumes it."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Sweep resolutions (and batch sizes): scaling exponents, crossover, memory, bottlenecks, roofline."""
    _quiet_profiler(quiet)
    from diffprobe.parsing import parse_ints, parse_resolutions
    from diffprobe.run.sweep import SweepConfig, run_sweep

    base = _base_config(model=model, prompt=prompt, steps=steps, guidance=guidance, seed=seed, device=device,
                        dtype=dtype, weights=weights, allow_pickle=allow_pickle, repeat=repeat, warmup=warmup,
                        sample_steps=sample_steps, mode=mode, trace_ops=trace, hardware=hardware, approx=approx)
    sc = SweepConfig(base=base, resolutions=parse_resolutions(resolutions), batches=parse_ints(batch, "--batch"),
                     out=out_dir, max_point_seconds=max_point_seconds, accel=accel, accel_density=accel_density)
    sc = sc.with_out()
    bar, callback = _progress(quiet)
    with bar:
        state = run_sweep(sc, progress=callback, log=lambda m: sys.stderr.write(f"diffprobe: {m}\n"))
        report_path = _build_report(sc.out)
    if fmt is Format.json:
        _print_json(state)
    else:
        from diffprobe.report.text import sweep_tables

        for item in sweep_tables(state):
            out.print(item)
        out.print(f"report: {report_path}")
    points = state.get("points", {}).values()
    if points and not any(p.get("status") == "ok" for p in points):  # nothing measured: a failure, not a result
        first = next((p.get("message") for p in points if p.get("message")), "")
        raise DiffprobeError(f"no point of the sweep succeeded ({len(points)} tried; first: {first})")


def _build_report(folder) -> str:
    from diffprobe.report.html import build_report

    return str(build_report(folder))


@app.command()
def report(run_dir: str = typer.Argument(..., help="A profile, sweep or compare folder.")) -> None:
    """(Re)build report.html of a run folder from its files."""
    out.print(f"report: {_build_report(run_dir)}")


@app.command()
def compare(
    run_dirs: list[str] = typer.Argument(..., help="Two or more profile folders, or two or more sweep folders; "
                                         "the first is the baseline."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Comparison folder, new or empty, not one of the runs "
                                          "(default: runs/<time>-compare)."),
    force: bool = O_FORCE,
    fmt: Format = O_FORMAT,
) -> None:
    """Compare runs side by side with ratios to the first: writes compare.json, comparison.parquet, report.html."""
    from diffprobe.run.compare import compare_runs

    d = compare_runs(run_dirs, out_dir, force=force)
    _build_report(d["run_dir"])
    if fmt is Format.json:
        _print_json(d)
        return
    from diffprobe.report.text import compare_table

    out.print(compare_table(d))
    out.print(f"the runs differ in: {', '.join(d['differs']) or 'nothing in their configuration'}")
    for line in d.get("warnings", []):
        out.print(f"warning: {line}")
    out.print(f"report: {Path(d['run_dir']) / 'report.html'}")


@app.command()
def sparsity(
    model: str = typer.Option("digits", help="Architecture; trained attention needs --model digits or --weights."),
    resolutions: Optional[str] = typer.Option(None, help="Comma list of sides (N or HxW); default: native."),
    prompt: Optional[str] = O_PROMPT,
    steps: int = typer.Option(25, help="Denoising steps of the full run."),
    guidance: Optional[float] = O_GUIDANCE,
    seed: int = O_SEED,
    device: str = O_DEVICE,
    dtype: Dtype = O_DTYPE,
    weights: Optional[str] = O_WEIGHTS,
    allow_pickle: bool = O_PICKLE,
    sample_steps: int = typer.Option(0, help="Denoising steps probed (0: all, the default here: sparsity changes "
                                     "from step to step; profile samples 3 on a CPU because its steps cost the "
                                     "same). On a CPU, SD models take seconds per step: limit them here."),
    eps: str = typer.Option("1e-2,1e-3,1e-4", help="Thresholds: fraction of probabilities below each, in [0, 1)."),
    tau: str = typer.Option("0.9,0.95,0.99", help="Mass levels for keys/blocks needed to cover, in (0, 1]."),
    blocks: str = typer.Option("32,64,128", help="Square block sides (tokens) for block sparsity."),
    save_masks: bool = typer.Option(True, "--save-masks/--no-save-masks", help="Keep every call's kept blocks and "
                                    "per-row kept keys in each point's masks/ (for `diffprobe accel --masks`)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Output folder (default: runs/<time>-sparsity-<model>); "
                                          "re-running the same command with the same --out resumes it."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Attention sparsity of every UNet attention call: per layer, head, step and resolution."""
    from dataclasses import replace

    from diffprobe.attention.probe import SparsityConfig
    from diffprobe.models.registry import get_spec
    from diffprobe.parsing import parse_floats, parse_ints, parse_resolutions
    from diffprobe.run.sparsity import run_sparsity

    base = _base_config(model=model, prompt=prompt, steps=steps, guidance=guidance, seed=seed, device=device,
                        dtype=dtype, weights=weights, allow_pickle=allow_pickle, sample_steps=sample_steps,
                        mode=Mode.measured, trace_ops=False)
    if model == "digits" and prompt is None:
        base = replace(base, prompt="a handwritten seven")
    native = get_spec(model).native_resolution
    res = parse_resolutions(resolutions) if resolutions is not None else [(native, native)]
    sc = SparsityConfig(eps=parse_floats(eps, "--eps", 0, 1, True), taus=parse_floats(tau, "--tau", 0, 1, False),
                        blocks=tuple(parse_ints(blocks, "--blocks")), save_masks=save_masks)
    from diffprobe.records.runfolder import prepare_out_dir

    out_dir = out_dir if out_dir is not None else str(prepare_out_dir(None, f"sparsity-{model}"))
    bar, callback = _progress(quiet)
    with bar:
        state = run_sparsity(base, res, sc, out_dir, progress=callback)
        report_path = _build_report(out_dir)
    if fmt is Format.json:
        _print_json(state)
        return
    from diffprobe.report.text import sparsity_table

    out.print(sparsity_table(state))
    from diffprobe.report.findings import sparsity_headline

    for line in sparsity_headline(state):
        out.print(line)
    out.print(f"report: {report_path}")


@app.command()
def approx(
    method: str = typer.Option("threshold", help="Comma list of methods: threshold, topk, predicted, block "
                               "(attention) and deepcache, tgate (UNets), first-block-cache, pab, faster-cache, "
                               "taylorseer, teacache (Flux) (step-level reuse)."),
    eps: str = typer.Option("0,1e-3,1e-2", help="threshold / predicted: probabilities below eps dropped, [0, 1)."),
    k: str = typer.Option("64,16,4", help="topk: keys kept per query (>= 1)."),
    tau: str = typer.Option("1,0.99,0.95,0.9", help="block: mass covered by the kept key blocks, (0, 1]."),
    block: int = typer.Option(64, help="block: block side in tokens."),
    mask_interval: str = typer.Option("1", "--mask-interval", help="block: predict a layer's block mask every N "
                                      "steps and reuse it in between (no predictor on those steps); a comma list "
                                      "runs every block setting once per interval."),
    interval: str = typer.Option("2,3,5", help="deepcache: a full UNet every N steps, the rest reuse its deep "
                                 "features; taylorseer: blocks computed every N steps, forecast in between (whole "
                                 "numbers >= 1)."),
    threshold: str = typer.Option("0.05,0.1,0.2", help="first-block-cache: the first block's relative residual "
                                  "change below which the other blocks are skipped; teacache: the accumulated "
                                  "rescaled change of the modulated input below which every block is (>= 0)."),
    skip: str = typer.Option("2,3", help="pab / faster-cache: each attention layer computed every N steps inside "
                             "the timestep window (pab: (100, 800), reused; faster-cache: (-1, 681), extrapolated) "
                             "(whole numbers >= 1)."),
    gate: str = typer.Option("5,10", help="tgate: the step after which cross-attention is reused and guidance "
                             "stops (whole numbers >= 1)."),
    setting: Optional[str] = typer.Option(None, "--setting", help="More settings, comma list; + joins an attention "
                                          "method and a reuse method, measured together: block=0.9+deepcache=3."),
    rank: int = typer.Option(8, help="predicted: rank of the random projection that estimates the scores."),
    renormalize: bool = typer.Option(True, "--renormalize/--no-renormalize",
                                     help="Rescale kept probabilities to sum to 1 per row."),
    model: str = typer.Option("digits", help="Architecture; quality means something on digits or --weights."),
    height: Optional[int] = typer.Option(None, help="Image height in px (default: native)."),
    width: Optional[int] = typer.Option(None, help="Image width in px (default: native)."),
    prompt: Optional[str] = O_PROMPT,
    steps: int = typer.Option(25, help="Denoising steps."),
    guidance: Optional[float] = O_GUIDANCE,
    seed: int = O_SEED,
    device: str = O_DEVICE,
    dtype: Dtype = O_DTYPE,
    weights: Optional[str] = O_WEIGHTS,
    allow_pickle: bool = O_PICKLE,
    per_digit: int = typer.Option(3, help="digits: images per digit in the quality batch."),
    repeat: int = typer.Option(1, help="Timed generations per row (same noise): the median seconds, with their "
                               "min-max spread."),
    clip_weights: Optional[str] = typer.Option(None, help="Local CLIP model folder (transformers format) for a CLIP "
                                               "score of every setting; never downloaded."),
    save_masks: bool = typer.Option(True, "--save-masks/--no-save-masks", help="Keep what each setting kept per "
                                    "call in masks/<setting>/ (for `diffprobe accel --masks`)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Output folder, new or empty (default: "
                                          "runs/<time>-approx-<model>)."),
    force: bool = O_FORCE,
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Approximate attention vs dense: FLOPs saved (exact account), time, PSNR/SSIM, digit accuracy."""
    from diffprobe.attention.approx import METHODS, parse_values
    from diffprobe.methods.reuse import REUSE
    from diffprobe.parsing import parse_floats, parse_ints
    from diffprobe.run.approx import run_approx

    names = [m.strip() for m in method.split(",") if m.strip()]
    bad = [m for m in names if m not in (*METHODS, *REUSE)]
    if bad or (not names and not setting):
        raise DiffprobeError(f"unknown method {(bad or [''])[0]!r}; use one of {', '.join((*METHODS, *REUSE))}")
    reuse_values = {"deepcache": ("--interval", interval), "tgate": ("--gate", gate),
                    "first-block-cache": ("--threshold", threshold), "pab": ("--skip", skip),
                    "faster-cache": ("--skip", skip), "teacache": ("--threshold", threshold),
                    "taylorseer": ("--interval", interval)}
    methods = {m: (parse_floats(reuse_values[m][1], reuse_values[m][0], 0, float("inf"), True) if m in REUSE
                   else parse_values(m, {"eps": eps, "k": k, "tau": tau})) for m in names}
    extra = [t.strip() for t in (setting or "").split(",") if t.strip()]
    intervals = parse_ints(mask_interval, "--mask-interval")
    if per_digit < 1:
        raise DiffprobeError("--per-digit must be at least 1")
    base = _base_config(model=model, prompt=prompt, height=height, width=width, steps=steps, guidance=guidance,
                        seed=seed, device=device, dtype=dtype, weights=weights, allow_pickle=allow_pickle,
                        mode=Mode.measured, trace_ops=False)
    bar, callback = _progress(quiet)
    with bar:
        state = run_approx(base, methods, renormalize=renormalize, block=block, rank=rank, per_digit=per_digit,
                           out=out_dir, progress=callback, clip_weights=clip_weights, force=force,
                           save_masks=save_masks, settings=extra, mask_interval=intervals, repeat=repeat)
        report_path = _build_report(state["run_dir"])
    if fmt is Format.json:
        _print_json(state)
        return
    from diffprobe.report.text import approx_table

    out.print(approx_table(state))
    for note in state.get("notes", []):
        out.print(note)
    if state["random_weights"]:
        out.print("random weights: attention is near-uniform, so quality and savings say nothing about a trained "
                  "model; use --model digits or --weights")
    out.print(f"report: {report_path}")


hardware_app = typer.Typer(help="Hardware presets for the roofline: list, show, measure this CPU.",
                           no_args_is_help=True)
app.add_typer(hardware_app, name="hardware")


@hardware_app.command("list")
def hardware_list(fmt: Format = O_FORMAT) -> None:
    """List the presets (this-cpu is measured on first use and cached)."""
    from diffprobe.hardware.presets import describe_presets
    from diffprobe.report.text import presets_table

    rows = describe_presets()
    if fmt is Format.json:
        _print_json({"presets": rows})
        return
    out.print(presets_table(rows))


def _show_preset(d: dict, fmt: Format) -> None:
    from diffprobe.report.text import preset_lines

    if fmt is Format.json:
        _print_json(d)
        return
    for line in preset_lines(d):
        out.print(line)


@hardware_app.command("show")
def hardware_show(name: str = typer.Argument(..., help="Preset name or path to a .toml file."),
                  fmt: Format = O_FORMAT) -> None:
    """Show one preset's ceilings, ridge points and source."""
    from diffprobe.hardware.presets import get_preset

    _show_preset(get_preset(name).to_dict(), fmt)


@hardware_app.command("measure")
def hardware_measure(fmt: Format = O_FORMAT) -> None:
    """Measure this CPU's ceilings now (matmul FLOP/s per dtype, copy bandwidth) and cache them as this-cpu."""
    from diffprobe.hardware.measure import this_cpu

    _show_preset(this_cpu(remeasure=True).to_dict(), fmt)


kernels_app = typer.Typer(help="Attention kernels on this machine: block-sparse vs dense SDPA.", no_args_is_help=True)
app.add_typer(kernels_app, name="kernels")


class Backend(str, Enum):
    auto = "auto"
    flex = "flex"
    gather = "gather"
    cpp = "cpp"


@kernels_app.command("bench")
def kernels_bench(
    tokens: int = typer.Option(4096, help="Query and key tokens (H/8·W/8 of the latent for self-attention)."),
    density: float = typer.Option(0.25, help="Kept fraction of key blocks per query block, in (0, 1]."),
    head_dim: int = typer.Option(40, help="Head dimension (SD 1.5: 40 at the first level, SD 2.1: 64, SDXL: 64)."),
    heads: int = typer.Option(8, help="Attention heads."),
    block_size: int = typer.Option(64, help="Tokens per block side."),
    dtype: Dtype = O_DTYPE,
    device: str = O_DEVICE,
    batch: int = typer.Option(1, help="Batch size."),
    backend: Backend = typer.Option(Backend.auto, help="auto, flex (compiled FlexAttention), cpp (C++ extension, "
                                    "CPU) or gather (eager)."),
    repeats: int = typer.Option(5, help="Timed calls of each kernel (median reported) after one warm-up."),
    seed: int = typer.Option(0, help="Seed of the inputs and the mask."),
    check_heads: Optional[int] = typer.Option(None, help="Heads checked against the float64 reference "
                                              "(default all; 0 skips the check)."),
    max_seconds: float = typer.Option(300, "--max-seconds", help="Refuse a bench estimated to take longer (the "
                                      "estimate is measured here first, in milliseconds)."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Time block-sparse attention against dense SDPA on the same random inputs, and check it against float64."""
    from diffprobe.attention.bench import bench_kernel

    bar, callback = _progress(quiet)
    with bar:
        r = bench_kernel(tokens, density, head_dim, heads, block_size=block_size, dtype=dtype.value, device=device,
                         batch=batch, backend=backend.value, repeats=repeats, seed=seed, check_heads=check_heads,
                         max_seconds=max_seconds, progress=callback)
    if fmt is Format.json:
        _print_json(r)
        return
    from diffprobe.report.text import bench_lines

    for line in bench_lines(r):
        out.print(line)


class Dataflow(str, Enum):
    os = "os"
    ws = "ws"
    is_ = "is"


@app.command()
def accel(
    target: str = typer.Argument(..., help="A profile run folder, or 'gemm' for one GEMM on one array."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Accelerator presets, comma list (built-in: sa-dense, "
                                       "sa-block64, sa-row, sa-element) or .toml paths. [default: sa-dense]",
                                       show_default=False),
    density: Optional[float] = typer.Option(None, help="Kept fraction of self-attention, in (0, 1], for designs "
                                            "that skip attention (a uniform stand-in for measured masks)."),
    masks: Optional[str] = typer.Option(None, help="A sparsity run (or its point folder) whose measured masks the "
                                        "skipping designs follow, per step, layer and head."),
    tau: Optional[float] = typer.Option(None, help="With --masks: the attention mass the kept blocks / keys cover. "
                                        "[default: 0.95]", show_default=False),
    gpu: Optional[str] = typer.Option(None, help="GPU preset whose roofline the designs are compared with. "
                                      "[default: H100-SXM]", show_default=False),
    m: Optional[int] = typer.Option(None, "--m", help="gemm: rows of the left operand (output pixels / tokens)."),
    k: Optional[int] = typer.Option(None, "--k", help="gemm: the reduction dimension."),
    n: Optional[int] = typer.Option(None, "--n", help="gemm: columns of the right operand (output channels)."),
    rows: Optional[int] = typer.Option(None, help="gemm: array rows. [default: 128]", show_default=False),
    cols: Optional[int] = typer.Option(None, help="gemm: array columns. [default: 128]", show_default=False),
    dataflow: Optional[Dataflow] = typer.Option(None, help="gemm: os, ws or is. [default: ws]",
                                                show_default=False),
    fmt: Format = O_FORMAT,
) -> None:
    """A run on accelerator designs (dense systolic array, with block / row / element attention skipping):
    cycles, latency, energy and traffic per stage and layer type, against the dense design and the GPU."""
    from diffprobe.report.text import accel_gemm_lines, accel_items

    gemm_only = {"--m": m, "--k": k, "--n": n, "--rows": rows, "--cols": cols, "--dataflow": dataflow}
    run_only = {"--arch": arch, "--density": density, "--masks": masks, "--tau": tau, "--gpu": gpu}
    if target == "gemm":
        from diffprobe.run.accel import accel_gemm

        given = [flag for flag, v in run_only.items() if v is not None]
        if given:
            raise DiffprobeError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a run folder; "
                                 "accel gemm maps one GEMM (--m, --k, --n) on a --rows x --cols array")
        missing = [flag for flag in ("--m", "--k", "--n") if gemm_only[flag] is None]
        if missing:
            raise DiffprobeError(f"accel gemm needs {', '.join(missing)} (the GEMM's sizes)")
        r = accel_gemm(m, k, n, rows or 128, cols or 128, (dataflow or Dataflow.ws).value)
        if fmt is Format.json:
            _print_json(r)
        else:
            for line in accel_gemm_lines(r):
                out.print(line)
        return
    from diffprobe.run.accel import accel_run

    given = [flag for flag, v in gemm_only.items() if v is not None]
    if given:
        raise DiffprobeError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to accel gemm; a run "
                             "folder's GEMMs come from its records")
    r = accel_run(target, arch or "sa-dense", density, gpu or "H100-SXM", masks=masks,
                  tau=0.95 if tau is None else tau)
    report_path = _build_report(target)
    _warn(r.get("warnings", []))
    if fmt is Format.json:
        _print_json(r)
        return
    for item in accel_items(r):
        out.print(item)
    out.print(f"report: {report_path}")


@app.command()
def models(fmt: Format = typer.Option(Format.table, "--format", help="table or json.")) -> None:
    """List the embedded architectures with their parameter counts (built on the meta device)."""
    from diffprobe.models.registry import describe_models
    from diffprobe.report.text import models_table

    rows = describe_models()
    if fmt is Format.json:
        _print_json({"models": rows})
        return
    out.print(models_table(rows))


def _click_exceptions():
    """The click exceptions typer uses: ``UsageError`` from the vendored ``typer._click`` (typer >= 0.20) or
    click, ``Abort`` and ``Exit`` from wherever that typer defines them."""
    from types import SimpleNamespace

    try:
        import typer._click.exceptions as usage
    except ImportError:  # older typer on top of click
        import click.exceptions as usage
    control = usage if hasattr(usage, "Abort") else __import__("typer.exceptions", fromlist=["Abort"])
    return SimpleNamespace(UsageError=usage.UsageError, Abort=control.Abort, Exit=control.Exit)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit status 2."""
    import signal

    from diffprobe.errors import Terminated

    def on_sigterm(signum, frame):  # unwind as after Ctrl-C: what was measured is written, then exit 143
        _terminated.append(signum)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (an embedding program's worker): its own handling stays
        previous = None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_terminated: list[int] = []  # SIGTERM received (click and typer turn the interruption into Abort / Exit(130))


def _interrupted() -> int:
    sigterm = bool(_terminated)
    sys.stderr.write("diffprobe: interrupted" + (" (SIGTERM)" if sigterm else "") + "\n")
    return 143 if sigterm else 130


def _main(argv: list[str] | None) -> int:
    _terminated.clear()
    cexc = _click_exceptions()
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="diffprobe", standalone_mode=False)
    except DiffprobeError as exc:
        sys.stderr.write(f"diffprobe: error: {exc}\n")
        return 2
    except cexc.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help of the (sub)command that was called bare
            ctx = getattr(exc, "ctx", None)
            sys.stdout.write((ctx.get_help() if ctx is not None else command.get_help(command.make_context(
                "diffprobe", ["--help"], resilient_parsing=True))) + "\n")
            return 0
        message = " ".join(exc.format_message().split())
        sys.stderr.write(f"diffprobe: error: {message}\n")
        return 2
    except cexc.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _interrupted()
        sys.stderr.write("diffprobe: aborted\n")
        return 130
    except cexc.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    if isinstance(rv, int) and not isinstance(rv, bool) and rv:  # typer turns Ctrl-C into Exit(130) and returns it
        if rv == 130:
            return _interrupted()
        return rv
    return 0


if __name__ == "__main__":
    sys.exit(main())
