"""The commands beside runs: hardware presets, the attention kernel bench, accelerator designs, the models."""

from __future__ import annotations

from enum import Enum
from typing import Optional

import typer

from diffprobe.cli.common import (
    O_DEVICE,
    O_DTYPE,
    O_FORMAT,
    O_QUIET,
    Dtype,
    Format,
    build_report,
    out,
    print_document,
    print_json,
    progress_bar,
    warn,
)
from diffprobe.errors import DiffprobeError

hardware_app = typer.Typer(help="Hardware presets for the roofline: list, show, measure and calibrate this machine.",
                           no_args_is_help=True)


@hardware_app.command("list")
def hardware_list(fmt: Format = O_FORMAT) -> None:
    """List the presets (this-cpu is measured on first use and cached)."""
    from diffprobe.hardware.presets import describe_presets
    from diffprobe.report.text import presets_table

    rows = describe_presets()
    if fmt is Format.json:
        print_json({"presets": rows})
        return
    out.print(presets_table(rows))


def _show_preset(d: dict, fmt: Format) -> None:
    from diffprobe.report.text import preset_lines

    if fmt is Format.json:
        print_json(d)
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


@hardware_app.command("calibrate")
def hardware_calibrate(
    quick: bool = typer.Option(False, "--quick", help="A coarse grid (under 2 minutes on 2 cores; the full one "
                               "takes up to 10)."),
    out_path: Optional[str] = typer.Option(None, "--out", help="The preset file to write (default: "
                                           "runs/calibration-<date>.toml)."),
    device: str = typer.Option("cpu", help="cpu, or cuda where a GPU is present."),
    dtype: str = typer.Option("float32", help="The dtype the curves are measured in (the runs' dtype)."),
    passes: int = typer.Option(1, "--passes", help="Time the operator grids this many times over, each rate the "
                               "median of the passes (3 on a shared machine whose speed moves: N times as long)."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Measure this machine's achieved throughput per operator class into a preset: profile --hardware FILE then
    predicts every record's seconds from it (docs/prediction.md)."""
    import datetime
    import time
    from pathlib import Path

    from diffprobe.hardware.measure import this_cpu
    from diffprobe.hardware.passes import Interrupted
    from diffprobe.hardware.passes import check as check_passes
    from diffprobe.run.calibration import calibrate_machine, calibration_preset, write_calibration

    if dtype not in ("float32", "float16", "bfloat16"):
        raise DiffprobeError(f"--dtype {dtype!r} is not one of float32, float16, bfloat16")
    check_passes(passes)  # before this-cpu's measurement
    path = Path(out_path or f"runs/calibration-{datetime.date.today().isoformat()}.toml")
    if path.exists() and path.is_dir():
        raise DiffprobeError(f"--out {path} is a folder; name a .toml file")
    started = time.perf_counter()
    base = this_cpu(remeasure=True).to_dict()
    bar, callback = progress_bar(quiet)
    try:
        with bar:
            table = calibrate_machine("quick" if quick else "full", dtype, device, base, callback, passes)
    except Interrupted as exc:  # nothing measured is lost: what finished is written, then the interruption goes on
        _keep_interrupted(exc, path, base, dtype, quick, passes, time.perf_counter() - started)
        raise
    meta = table["meta"]
    meta["command_s"] = time.perf_counter() - started  # the curves, this-cpu's ceilings and the overhead fit
    write_calibration(path, calibration_preset(base, table, dtype, quick, passes))
    if meta.get("steadiness_note"):
        warn([meta["steadiness_note"]])
    if fmt is Format.json:
        print_json({"preset": str(path), "calibration": meta})
        return
    _say_calibrated(out, meta, path)


def _keep_interrupted(exc, path, base: dict, dtype: str, quick: bool, passes: int, seconds: float) -> None:
    """An interrupted calibration's preset (the passes that finished) or its first pass's finished curves, written,
    and one line saying where."""
    from diffprobe.run.calibration import calibration_preset, write_calibration, write_unfinished_pass

    if exc.table is not None:
        exc.table["meta"]["command_s"] = seconds
        write_calibration(path, calibration_preset(base, exc.table, dtype, quick, passes))
        warn([f"kept: {path}, a calibration {exc.table['meta']['interrupted']}"])
        return
    partial = write_unfinished_pass(path, exc, base)
    warn([f"kept: {partial}, the curves measured before the interruption (not a preset: calibrate again)"
          if partial else "interrupted before the first curve was finished: nothing written"])


def _say_calibrated(out, meta: dict, path) -> None:
    """The table format's lines after a calibration: where it went, how steady the machine was."""
    passes = meta.get("passes", 1)
    out.print(f"calibrated {meta['cpu']} ({meta['cpu_capability']}, {meta['threads']} threads, torch "
              f"{meta['torch']}) in {meta['command_s']:.0f} s"
              f"{f' ({passes} passes, each rate their median)' if passes > 1 else ''}: {path}")
    out.print(f"reference GEMM and convolution: {meta['reference_flops_per_s'] / 1e9:.0f} GFLOP/s (median of "
              f"{len(meta['reference_probes'])} probes through the calibration, spread {meta['reference_spread']:.0%})")
    if meta.get("speed_probes"):
        copies = "; the memory curves as timed"
        if meta.get("speed_bytes_spread") is not None:
            copies = (f", a light copy with it (spread {meta['speed_bytes_spread']:.0%}) for the memory curves' "
                      "points of a megabyte or more (silu and softmax by the GEMM probe)")
        out.print(f"curves priced at the calibration's median speed: a light GEMM probe timed {meta['speed_probes']} "
                  f"times beside their points (spread {meta['speed_spread']:.0%}){copies}")
    out.print(f"use it: diffprobe profile --hardware {path}")


kernels_app = typer.Typer(help="Attention kernels on this machine: block-sparse vs dense SDPA.", no_args_is_help=True)


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
    hardware: Optional[str] = typer.Option(None, "--hardware", help="A calibrated preset (`diffprobe hardware "
                                           "calibrate`): the kernel's and dense SDPA's seconds it predicts, beside "
                                           "the measured."),
    fmt: Format = O_FORMAT,
    quiet: bool = O_QUIET,
) -> None:
    """Time block-sparse attention against dense SDPA on the same random inputs, and check it against float64."""
    from diffprobe.attention.bench import bench_kernel, kernel_preset, predicted

    preset = kernel_preset(hardware, dtype.value, device) if hardware else None
    bar, callback = progress_bar(quiet)
    with bar:
        r = bench_kernel(tokens, density, head_dim, heads, block_size=block_size, dtype=dtype.value, device=device,
                         batch=batch, backend=backend.value, repeats=repeats, seed=seed, check_heads=check_heads,
                         max_seconds=max_seconds, progress=callback)
    if preset is not None:
        r["predicted"] = predicted(r, preset)
    if fmt is Format.json:
        print_json(r)
        return
    from diffprobe.report.text import bench_lines

    for line in bench_lines(r):
        out.print(line)


class Dataflow(str, Enum):
    os = "os"
    ws = "ws"
    is_ = "is"


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
    from diffprobe.report.text import accel_gemm_lines

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
            print_json(r)
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
    report_path = build_report(target)
    warn(r.get("warnings", []))
    if fmt is Format.json:
        print_json(r)
        return
    print_document("accel", r, target, report_path)


def models(fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
           params_by_module: Optional[str] = typer.Option(
               None, "--params-by-module", metavar="MODEL", help="Where MODEL's parameters are: per component, "
               "per top-level module and per role (attention, ffn, modulation, norm, ...).")) -> None:
    """List the embedded architectures with their parameter counts (built on the meta device)."""
    from diffprobe.models.registry import describe_models
    from diffprobe.report.text import models_table, params_tables

    if params_by_module is not None:
        from diffprobe.models.params import params_by_module as by_module
        from diffprobe.models.registry import get_spec

        comps = by_module(get_spec(params_by_module))
        if fmt is Format.json:
            print_json({"model": params_by_module, "components": comps})
            return
        for table in params_tables(params_by_module, comps):
            out.print(table)
        return

    rows = describe_models()
    if fmt is Format.json:
        print_json({"models": rows})
        return
    out.print(models_table(rows))

