"""``diffprobe profile``: one instrumented text-to-image run, timed per stage.

The run is the computation users run (diffusers' own pipeline: tokenizer -> text encoder(s) -> denoising loop
with classifier-free guidance -> VAE decode). On a CPU a full 50-step run takes minutes, so by default only the
first ``sample_steps`` denoising steps are executed (the loop is stopped after them, :mod:`diffprobe.run.stepping`,
and the VAE still decodes) and the full-run time is reported separately, as a
labelled projection: every step runs the same UNet on same-shaped tensors, so per-step cost is step-invariant.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from diffprobe.analyses.breakdown import layer_table
from diffprobe.analyses.findings import profile_findings
from diffprobe.errors import DiffprobeError, interruption
from diffprobe.hardware.environment import environment
from diffprobe.models.registry import DENOISERS, TEXT_ENCODERS, count_params, get_spec
from diffprobe.records.chrome import write_chrome_trace
from diffprobe.records.runfolder import prepare_out_dir, release_folder, write_document, write_ops, write_table
from diffprobe.run.compiled import compiled_pass
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
from diffprobe.run.passes import analytic_pass, measured_pass, trace_with_reuse, tracer_for  # noqa: F401
from diffprobe.run.pipeline import (  # noqa: F401  (re-exported)
    PipelineCall,
    build_pipeline,
    count_denoiser_evals,
    initial_latents,
    pipeline_kwargs,
    prompt_notes,
    stand_in_notes,
    to_pil,
)
from diffprobe.run.result import ProfileResult
from diffprobe.run.setting import RECORDS, SettingInterrupted, run_setting
from diffprobe.run.settings import parse_settings
from diffprobe.timing.stages import summarize_events  # noqa: F401  (re-exported)
from diffprobe.units import fmt_bytes


def run_profile(cfg: ProfileConfig, progress=None, pipe=None) -> ProfileResult:
    """Run the profile described by a (resolved or not) config; see :func:`diffprobe.profile`.

    ``progress(stage, done, total)`` is called as work advances. A failure after measuring started still
    writes ``run.json`` (status ``failed``) with everything measured so far, then raises.
    """
    cfg = cfg.resolved()
    if cfg.mode == "measured" and get_spec(cfg.model).video and pipe is None:
        check_activations(cfg)  # a clip's activations can outgrow its weights: refused before any folder or build
    out_dir = prepare_out_dir(cfg.out, cfg.model, cfg.force)
    try:
        return _profile_into(cfg, out_dir, progress, pipe)
    finally:
        release_folder(out_dir)  # written: its files claim it from now on


def check_activations(cfg: ProfileConfig) -> None:
    """Refuse a measured video run whose weights and largest activations do not fit the device's available memory,
    naming the estimate: the weights in the run's dtype plus twice the largest tensor one op writes (its input and
    its output alive together: a lower bound of the peak), from an analytic trace of the run (seconds, nothing
    allocated; its steps replayed). A video's largest tensors (the VAE decoder's full-resolution frames, a
    feed-forward over every token) can outgrow the weights' slack that :func:`check_memory` allows."""
    import torch

    from diffprobe.hardware.environment import available_memory

    free = available_memory(cfg.device)
    if free is None:
        return
    spec = get_spec(cfg.model)
    twin = analytic_twin(cfg, out=None)
    traced = analytic_pass(twin, build_pipeline(twin, spec))
    largest = int(traced.ops["bytes_written"].max() or 0)  # in the run's dtype (the twin keeps it)
    _, params = memory_estimate(spec, cfg.dtype)
    weights = params * getattr(torch, cfg.dtype).itemsize
    need = weights + 2 * largest
    if need <= free:
        return
    where = "GPU memory" if cfg.device.startswith("cuda") else "memory"
    raise DiffprobeError(f"a measured {spec.name} run at {cfg.height}x{cfg.width} x {cfg.frames} frames needs at least "
                         f"{fmt_bytes(need)} ({fmt_bytes(weights)} of weights in {cfg.dtype} and twice its largest "
                         f"activation, {fmt_bytes(largest)}) but {fmt_bytes(free)} of {where} are available; use "
                         "--mode analytic, fewer --frames or a smaller --height/--width")


def _profile_into(cfg: ProfileConfig, out_dir: Path, progress=None, pipe=None) -> ProfileResult:
    spec = get_spec(cfg.model)
    report = progress or (lambda *_: None)

    nothing = ProfileResult(cfg, spec, run_dir=str(out_dir))  # the folder says what happened
    with saved_on_failure(out_dir, nothing, "while building the pipeline; nothing was measured"):
        env = nothing.environment = environment("cpu" if cfg.mode == "analytic" else cfg.device)
        report("build", 0, 1)
        pipe = pipe or build_pipeline(cfg, spec)
        report("build", 1, 1)
        reuse = parse_settings(cfg.approx).reuse if cfg.approx else None
        if reuse is not None:  # a method for another model family is refused before any work
            reuse.check_model(pipe, cfg.model)
        params = {name: count_params(getattr(pipe, name)) for name in (*TEXT_ENCODERS, *DENOISERS, "vae")
                  if getattr(pipe, name, None) is not None}
        denoiser_evals = count_denoiser_evals(pipe, cfg.steps, "cpu")
        notes = prompt_notes(pipe, cfg.prompt, spec.max_sequence_length) + stand_in_notes(pipe)
    measured_evals = denoiser_evals if cfg.sample_steps == 0 else min(cfg.sample_steps, denoiser_evals)
    result = ProfileResult(cfg, spec, params=params, denoiser_evals=denoiser_evals,
                           denoiser_evals_measured=measured_evals, environment=env, run_dir=str(out_dir), notes=notes,
                           scheduler=type(pipe.scheduler).__name__,
                           moe=spec.family.moe(pipe, cfg.mode == "analytic"))
    if cfg.mode == "analytic":
        with saved_on_failure(out_dir, result, "while tracing"):
            traced = analytic_pass(cfg, pipe, report)
            result.ops, result.unsupported = traced.ops, traced.unsupported
            result.peak_memory_kind = "none (analytic: nothing is allocated)"
            if cfg.approx is not None:  # reuse only (checked): its plan replayed on meta
                result.approx, _, result.approx_ops = run_setting(cfg, pipe, result, report)
    else:
        with saved_on_failure(out_dir, result, "before the measured run; nothing was measured"):
            before = reference_now(cfg)  # the machine's speed against --hardware's calibration, before and after
        measured = measured_pass(cfg, pipe, denoiser_evals, measured_evals, report)
        result.take(measured)
        if before is not None and measured.failure is None:
            with saved_on_failure(out_dir, result, "after the measured run, whose times are complete"):
                result.reference_rates = [before, reference_now(cfg)]
        _save_images(out_dir, result, pipe, measured.images)
        if measured.failure is not None:  # what was measured, written before the failure propagates
            _save(out_dir, result)
            measured.check(out_dir / "run.json")
        if cfg.compile:  # the eager run is measured: written before any error of the compiled run propagates
            with saved_on_failure(out_dir, result, "in the compiled run; the eager run is complete", failures=True):
                _take_compiled(result, compiled_pass(cfg, pipe, result, report), pipe, out_dir)
        if cfg.approx is not None and result.ops is not None:
            with saved_on_failure(out_dir, result, "in the --approx pass; the dense run is complete"):
                _take_setting(result, cfg, pipe, report, out_dir)
    _save(out_dir, result)
    return result


def _take_setting(result: ProfileResult, cfg: ProfileConfig, pipe, report, out_dir: Path) -> None:
    """The ``--approx`` setting's entry, records and image into ``result`` and its folder; interrupted while the
    setting and dense were timed in turn, the pairs of runs that finished are taken before the interrupt goes on."""
    stopped = None
    try:
        outcome = run_setting(cfg, pipe, result, report)
    except SettingInterrupted as exc:
        outcome, stopped = exc.outcome, exc
    result.approx, images, result.approx_ops = outcome
    _save_images(out_dir, None, pipe, images, "image_approx.png")  # beside the dense one
    if stopped is not None:
        raise stopped.cause


LIGHT_PROBES = 5  # around a run, the light GEMM probe's median of this many (about 0.2 s on a 2-core CPU)


def reference_now(cfg: ProfileConfig) -> float | None:
    """The machine's speed now by the probe its ``--hardware`` calibration's level was measured with
    (:func:`~diffprobe.analyses.predict.speed_probe`: the light GEMM, the median of :data:`LIGHT_PROBES`, where its
    curves were scaled to one speed; else the reference GEMM and convolution), in the calibration's dtype, on a
    preset calibrated on this kind of device: timed before and after a measured run, to say whether the machine still
    runs at its calibration's speed."""
    if cfg.hardware is None:
        return None
    import statistics

    from diffprobe.analyses.predict import speed_probe
    from diffprobe.hardware.calibrate import reference_rate
    from diffprobe.hardware.presets import get_preset
    from diffprobe.hardware.probes import light_rate

    meta = get_preset(cfg.hardware).calibration.get("meta", {})
    if "reference_flops_per_s" not in meta or str(meta["device"]).split(":")[0] != cfg.device.split(":")[0]:
        return None
    if speed_probe(meta) == "light GEMM probe":
        return statistics.median(light_rate(meta["dtype"], cfg.device) for _ in range(LIGHT_PROBES))
    return reference_rate(meta["dtype"], cfg.device)


def _take_compiled(result: ProfileResult, compiled, pipe, out_dir: Path) -> None:
    """The compiled run's stage times and image become the run's; the eager ones stay in ``result.compiled``."""
    m = compiled.measured
    result.stages, result.stage_stats, result.steps = m.stages, m.stage_stats, m.steps
    result.peak_memory_bytes = max(result.peak_memory_bytes, m.peak_memory_bytes)
    result.compiled = compiled.entry
    if compiled.ops is not None:
        result.ops = compiled.ops
    result.notes.extend(compiled.notes)
    _save_images(out_dir, result, pipe, m.images)


def _save_images(out_dir: Path, result: ProfileResult | None, pipe, images, single: str = "image.png") -> None:
    """The run's images as PNG files (``image.png``, or ``image_<i>.png`` for a batch), a video's frames as an
    animated GIF (``video.gif`` / ``video_<i>.gif``, 16 frames a second: Wan's rate), named in ``result``."""
    if images is None:
        return
    names = []
    for i, img in enumerate(to_pil(pipe, images)):
        if isinstance(img, list):  # a video's frames
            stem = Path(single).stem.replace("image", "video")
            name = f"{stem}.gif" if len(images) == 1 else f"{stem}_{i}.gif"
            img[0].save(out_dir / name, save_all=True, append_images=img[1:], duration=1000 // 16, loop=0)
        else:
            name = single if len(images) == 1 else f"{Path(single).stem}_{i}.png"
            img.save(out_dir / name)
        names.append(name)
    if result is not None:
        result.image, result.images = names[0], names


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


def _save(out_dir: Path, result: ProfileResult) -> None:
    result.findings = profile_findings(result.document(), result.ops)
    if result.ops is not None:
        write_ops(out_dir, result.ops)
        if result.approx_ops is not None:  # the --approx setting's records, beside dense
            write_ops(out_dir, result.approx_ops, RECORDS)
        write_table(out_dir / "layers.parquet", layer_table(result.ops))
        if result.config.chrome_trace and result.config.mode == "measured":
            result.chrome_trace = write_chrome_trace(out_dir / "trace.json", result.ops, result.kernels).name
    write_document(out_dir, result.document())
