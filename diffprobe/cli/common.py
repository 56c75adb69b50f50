"""What every command shares: the typer app, output consoles, option declarations, the progress bar, the
config builder and the report call."""

from __future__ import annotations

import os
import sys

# transformers warns at import time about optional image processors we never use; keep stderr for our errors
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from enum import Enum
from typing import Optional

import typer
from rich.console import Console

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


def print_json(data: dict) -> None:
    from diffprobe.records.runfolder import dumps

    sys.stdout.write(dumps(data) + "\n")


def progress_bar(quiet: bool):
    """A rich progress bar on stderr, as a ``progress(stage, done, total)`` callback and a context manager."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True, disable=quiet or not err.is_terminal)
    tasks: dict[str, int] = {}

    def callback(stage: str, done: int, total: int, detail: str | None = None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total,
                   description=f"{stage} ({detail})" if detail else stage)

    return bar, callback


# options shared by `profile` and `sweep` (one declaration each)
O_MODEL = typer.Option("sd21-base", help="Architecture (see `diffprobe models`).")
O_PROMPT = typer.Option(None, help="Text prompt (default: \"a photo of an astronaut riding a horse on mars\"; "
                        "digits: \"a handwritten seven\").", show_default=False)
O_STEPS = typer.Option(None, help="Denoising steps of the full run (default: the model's pipeline's own: 50 for "
                       "SD, 20 PixArt and Sana, 28 SD3 and FLUX.1-dev, 4 FLUX.1-schnell).")
O_SCHEDULER = typer.Option(None, help="Sampler, built from the model's own scheduler configuration: ddim, pndm, "
                           "dpm++, euler, euler-a, unipc, lcm (SD, SDXL, PixArt), flow-euler (SD3, FLUX, Z-Image); "
                           "default: the model's own. Denoiser calls per step follow it (PNDM: one more).",
                           show_default=False)
O_FRAMES = typer.Option(None, "--frames", help="Video models: frames to generate, one more than a multiple of the "
                        "VAE's temporal compression (Wan: 4k+1; default: the model's pipeline's own, 81 for Wan).",
                        show_default=False)
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
# who runs the points (docs/executors.md): the same options on sweep, sparsity and approx
EXECUTOR_OPTIONS = {
    "executor": (str, typer.Option("local", "--executor", help="local: the points one after another in this "
                                   "process; ray: each point a Ray task (a local instance, or --ray-address).")),
    "ray_address": (Optional[str], typer.Option(None, "--ray-address", help="--executor ray: 'auto' or HOST:PORT "
                                                "joins a running cluster (`ray start --head`); default: start a local "
                                                "instance.", show_default=False)),
    "retries": (int, typer.Option(2, "--retries", help="--executor ray: times a point whose worker died is run "
                                  "again.")),
    "gpus_per_point": (Optional[float], typer.Option(None, "--gpus-per-point", help="--executor ray, CUDA: GPUs each "
                                                     "point asks for (a fraction shares one GPU; default 1).",
                                                     show_default=False)),
    "cpus_per_point": (Optional[float], typer.Option(None, "--cpus-per-point", help="--executor ray: CPUs each point "
                                                     "asks for (default: the threads a measured CPU point uses; 1 for "
                                                     "an analytic point).", show_default=False)),
}


def bundled(name: str, options: dict, make):
    """A decorator: ``fn`` (taking ``name``) gets ``options`` (parameter -> (annotation, typer option)) in its
    signature after ``out_dir``, and receives ``make(**their values)`` as ``name`` instead."""
    import functools
    import inspect

    def decorate(fn):
        sig = inspect.signature(fn)
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values() if p.name != name]
        at = next(i for i, p in enumerate(params) if p.name == "out_dir") + 1
        extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=option)
                 for k, (kind, option) in options.items()]

        @functools.wraps(fn)
        def wrapper(**kw):
            made = make(**{k: kw.pop(k) for k in options})
            return fn(**kw, **{name: made})

        wrapper.__signature__ = sig.replace(parameters=params[:at] + extra + params[at:])
        return wrapper

    return decorate


def _executor(executor: str, ray_address, retries: int, gpus_per_point, cpus_per_point):
    from diffprobe.run.executor import Executor

    return Executor(kind=executor, address=ray_address, retries=retries, gpus_per_point=gpus_per_point,
                    cpus_per_point=cpus_per_point).check()


# ``fn`` (taking ``executor``, an Executor) with the executor options in its place, checked before it runs
with_executor_options = bundled("executor", EXECUTOR_OPTIONS, _executor)


def quiet_profiler(quiet: bool) -> None:
    """With --quiet, kineto (torch.profiler's library) keeps its start/stop lines off stderr too: it reads its log
    level when torch loads, which the commands do after parsing (an explicit KINETO_LOG_LEVEL is kept)."""
    if quiet:
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")


def base_config(**kw):
    from diffprobe.models.registry import get_spec
    from diffprobe.run.profile import ProfileConfig

    kw["prompt"] = kw["prompt"] if kw["prompt"] is not None else get_spec(kw["model"]).default_prompt
    kw["dtype"] = kw["dtype"].value
    kw["mode"] = kw["mode"].value
    return ProfileConfig(**kw)


def warn(lines) -> None:
    for line in lines:  # one line each, never wrapped to the terminal's width
        sys.stderr.write(f"diffprobe: warning: {line}\n")



def print_document(kind: str, doc, folder, report_path: str) -> None:
    """A document (or the mapping of its fields) of ``kind``: its sections on the terminal (the same sections as its
    report.html), then where the report is."""
    from diffprobe.records.documents import DOCUMENTS, Document
    from diffprobe.report.text import document_items

    if not isinstance(doc, Document):
        doc = DOCUMENTS[kind].from_fields(doc)
    for item in document_items(kind, doc, folder):
        out.print(item)
    out.print(f"report: {report_path}")


def build_report(folder) -> str:
    from diffprobe.report.html import build_report

    return str(build_report(folder))
