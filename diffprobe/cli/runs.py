"""The commands of a run: profile, sweep, sparsity, and reading runs back: report, compare."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from diffprobe.cli.common import (
    O_DEVICE,
    O_DTYPE,
    O_FORCE,
    O_FORMAT,
    O_FRAMES,
    O_GUIDANCE,
    O_HARDWARE,
    O_MODE,
    O_MODEL,
    O_PICKLE,
    O_PROMPT,
    O_QUIET,
    O_REPEAT,
    O_SAMPLE,
    O_SCHEDULER,
    O_SEED,
    O_STEPS,
    O_TRACE,
    O_WARMUP,
    O_WEIGHTS,
    Dtype,
    Format,
    Mode,
    base_config,
    build_report,
    out,
    print_document,
    print_json,
    progress_bar,
    quiet_profiler,
    warn,
    with_executor_options,
)
from diffprobe.errors import DiffprobeError

# profile's own options
O_OP_TIMER = typer.Option("clock", "--op-timer", help="Per-op times: clock (a mark before and after each op) or "
                          "profiler (torch.profiler events joined to the ops; on CUDA, kernel time).")
O_CHROME_TRACE = typer.Option(False, "--chrome-trace", help="Measured mode: also write trace.json for Perfetto / "
                              "chrome://tracing.")
O_COMPILE = typer.Option(False, "--compile", help="Also run the UNet and VAE decoder under torch.compile (Inductor): "
                         "stage times and per-op kernel times of the compiled run, the eager run's beside, compile "
                         "time apart.")
O_CUDA_GRAPHS = typer.Option(False, "--cuda-graphs", help="CUDA: the compiled run replays CUDA graphs (implies "
                             "--compile; its time is per stage).")
O_APPROX = typer.Option(None, help="METHOD=VALUE[+METHOD=VALUE]: attention (threshold=0.01, topk=16, predicted=0.01, "
                        "block=0.9) and/or step reuse (deepcache=3, tgate=10; Flux: pab=2, taylorseer=3, ...): run "
                        "again with it and show its account beside dense.")
O_MASK_INTERVAL = typer.Option(1, "--mask-interval", help="--approx block=τ: predict a layer's block mask every N "
                               "steps and reuse it in between (no predictor on those steps).")


def profile(
    model: str = O_MODEL,
    prompt: Optional[str] = O_PROMPT,
    height: Optional[int] = typer.Option(None, help="Image height in px (default: the model's native size)."),
    width: Optional[int] = typer.Option(None, help="Image width in px (default: the model's native size)."),
    frames: Optional[int] = O_FRAMES,
    steps: Optional[int] = O_STEPS,
    scheduler: Optional[str] = O_SCHEDULER,
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
    op_timer: str = O_OP_TIMER,
    chrome_trace: bool = O_CHROME_TRACE,
    compile_: bool = O_COMPILE,
    cuda_graphs: bool = O_CUDA_GRAPHS,
    hardware: Optional[str] = O_HARDWARE,
    approx: Optional[str] = O_APPROX,
    mask_interval: int = O_MASK_INTERVAL,
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Profile one text-to-image run: time, FLOPs and bytes per stage and layer type, parameters, memory."""
    quiet_profiler(quiet)
    from diffprobe.run.profile import run_profile

    cfg = base_config(model=model, prompt=prompt, height=height, width=width, steps=steps, batch=batch,
                       guidance=guidance, seed=seed, device=device, dtype=dtype, weights=weights,
                       allow_pickle=allow_pickle, repeat=repeat, warmup=warmup, sample_steps=sample_steps,
                       out=out_dir, mode=mode, trace_ops=trace, chrome_trace=chrome_trace, hardware=hardware,
                       approx=approx, force=force, op_timer=op_timer, compile=compile_, cuda_graphs=cuda_graphs,
                       mask_interval=mask_interval, scheduler=scheduler, frames=frames)
    cfg = cfg.resolved()
    bar, callback = progress_bar(quiet)
    with bar:
        result = run_profile(cfg, progress=callback)
        callback("report", 0, 1)
        report_path = build_report(result.run_dir)
    d = result.document()
    warn(d.warnings or [])
    if fmt is Format.json:
        print_json(d)
    else:
        print_document("profile", d, result.run_dir, report_path)


@with_executor_options
def sweep(
    model: str = O_MODEL,
    resolutions: str = typer.Option("256,512,768,1024,1536,2048",
                                    help="Comma list of image sides (N or HxW), each a multiple of 8."),
    batch: str = typer.Option("1", help="Comma list of batch sizes."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Video models: comma list of frame counts (each "
                                         "4k+1 for Wan); default: the model's own."),
    prompt: Optional[str] = O_PROMPT,
    steps: Optional[int] = O_STEPS,
    scheduler: Optional[str] = O_SCHEDULER,
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
    out_dir: Optional[str] = typer.Option(None, "--out", help="Sweep folder, a path or a URL (s3://, gs://, hdfs://, "
                                          "file://; default: runs/<time>-sweep-<model>); the same command resumes it."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
    executor=None,
) -> None:
    """Sweep resolutions (and batch sizes): scaling exponents, crossover, memory, bottlenecks, roofline."""
    quiet_profiler(quiet)
    from diffprobe.parsing import parse_ints, parse_resolutions
    from diffprobe.run.sweep import SweepConfig, run_sweep

    base = base_config(model=model, prompt=prompt, steps=steps, guidance=guidance, seed=seed, device=device,
                        dtype=dtype, weights=weights, allow_pickle=allow_pickle, repeat=repeat, warmup=warmup,
                        sample_steps=sample_steps, mode=mode, trace_ops=trace, hardware=hardware, approx=approx,
                        scheduler=scheduler)
    sc = SweepConfig(base=base, resolutions=parse_resolutions(resolutions), batches=parse_ints(batch, "--batch"),
                     out=out_dir, max_point_seconds=max_point_seconds, accel=accel, accel_density=accel_density,
                     frames=parse_ints(frames, "--frames") if frames else None, executor=executor).with_out()
    bar, callback = progress_bar(quiet)
    with bar:
        state = run_sweep(sc, progress=callback, log=lambda m: sys.stderr.write(f"diffprobe: {m}\n"))
        report_path = build_report(sc.out)
    if fmt is Format.json:
        print_json(state)
    else:
        print_document("sweep", state, sc.out, report_path)
    points = state.get("points", {}).values()
    if points and not any(p.get("status") == "ok" for p in points):  # nothing measured: a failure, not a result
        first = next((p.get("message") for p in points if p.get("message")), "")
        raise DiffprobeError(f"no point of the sweep succeeded ({len(points)} tried; first: {first})")


def report(run_dir: str = typer.Argument(..., help="A profile, sweep or compare folder.")) -> None:
    """(Re)build report.html of a run folder from its files."""
    out.print(f"report: {build_report(run_dir)}")


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
    build_report(d.run_dir)
    if fmt is Format.json:
        print_json(d)
        return
    from diffprobe.report.text import compare_table

    out.print(compare_table(d))
    out.print(f"the runs differ in: {', '.join(d.differs) or 'nothing in their configuration'}")
    for line in d.warnings:
        out.print(f"warning: {line}")
    out.print(f"report: {Path(d.run_dir) / 'report.html'}")


@with_executor_options
def sparsity(
    model: str = typer.Option("digits", help="Architecture; trained attention needs --model digits or --weights."),
    resolutions: Optional[str] = typer.Option(None, help="Comma list of sides (N or HxW); default: native."),
    prompt: Optional[str] = O_PROMPT,
    steps: int = typer.Option(25, help="Denoising steps of the full run."),
    scheduler: Optional[str] = O_SCHEDULER,
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
    tiles: Optional[str] = typer.Option(None, "--tiles", help="Video models: 3D tiles of the latent token grid, "
                                        "frames x height x width, comma list (e.g. 1x8x8,2x4x8): the block "
                                        "statistics of the video's self-attention over those tiles too."),
    frames: Optional[int] = O_FRAMES,
    save_masks: bool = typer.Option(True, "--save-masks/--no-save-masks", help="Keep every call's kept blocks and "
                                    "per-row kept keys in each point's masks/ (for `diffprobe accel --masks`)."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Output folder, a path or a URL (default: "
                                          "runs/<time>-sparsity-<model>); re-running the same command with the same "
                                          "--out resumes it."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
    executor=None,
) -> None:
    """Attention sparsity of every UNet attention call: per layer, head, step and resolution."""

    from diffprobe.attention.probe import SparsityConfig
    from diffprobe.attention.tiles import parse_tile
    from diffprobe.models.registry import get_spec
    from diffprobe.parsing import parse_floats, parse_ints, parse_resolutions
    from diffprobe.run.sparsity import run_sparsity

    base = base_config(model=model, prompt=prompt, steps=steps, guidance=guidance, seed=seed, device=device,
                        dtype=dtype, weights=weights, allow_pickle=allow_pickle, sample_steps=sample_steps,
                        mode=Mode.measured, trace_ops=False, scheduler=scheduler, frames=frames)
    spec = get_spec(model)
    native = spec.native_resolution
    res = parse_resolutions(resolutions) if resolutions is not None else [(spec.native_height or native, native)]
    sc = SparsityConfig(eps=parse_floats(eps, "--eps", 0, 1, True), taus=parse_floats(tau, "--tau", 0, 1, False),
                        blocks=tuple(parse_ints(blocks, "--blocks")), save_masks=save_masks,
                        tiles=tuple(parse_tile(t) for t in (tiles or "").split(",") if t.strip()))
    from diffprobe.records.runfolder import prepare_out_dir

    out_dir = out_dir if out_dir is not None else str(prepare_out_dir(None, f"sparsity-{model}"))
    bar, callback = progress_bar(quiet)
    with bar:
        state = run_sparsity(base, res, sc, out_dir, progress=callback, executor=executor)
        report_path = build_report(out_dir)
    if fmt is Format.json:
        print_json(state)
        return
    print_document("sparsity", state, out_dir, report_path)

