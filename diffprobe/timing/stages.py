"""Wall time per pipeline stage, taken with hooks on the real diffusers pipeline.

Nothing in the computation changes: forward hooks time the text encoders and the UNet, thin wrappers time
``scheduler.step`` and ``vae.decode``, and the tokenizer's class is swapped for a timed subclass (a tokenizer
is invoked through ``__call__``, which an instance attribute cannot intercept). Everything is restored on exit.

Stages are timed on the one :class:`~diffprobe.timing.clock.Clock` (``perf_counter`` on the CPU, CUDA events read
once after the run), so timing never inserts a synchronization inside the pipeline.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from diffprobe.models.registry import TOKENIZERS, denoisers, text_encoder_names
from diffprobe.patching import Patches
from diffprobe.timing.clock import Clock

STAGE_ORDER = ("tokenize", "text_encoder", "text_encoder_2", "text_encoder_3", "text_encoder_4", "denoiser",
               "scheduler", "vae_decoder", "other")


@dataclass(frozen=True)
class StageEvent:
    """One timed interval of one stage; ``step`` is the denoising step for ``unet``/``scheduler``."""

    stage: str
    step: int | None
    seconds: float


class StageTimer:
    """Context manager that times every stage of one or more pipeline calls.

    ``current_stage`` names the stage running right now and ``failed_stage`` the one that raised (used to say
    where an out-of-memory happened).
    """

    def __init__(self, pipe, device: str, calls_per_step: int = 1):
        self.pipe = pipe
        self.calls_per_step = calls_per_step  # denoiser calls per step (2: CFG branches as separate calls)
        self.clock = Clock(device)
        self._raw: list[tuple[str, int | None, object, object]] = []
        self._patches = Patches()
        self._open: dict[str, object] = {}
        self._counts: dict[str, int] = {}
        self.current_stage: str | None = None
        self.failed_stage: str | None = None

    # -- bookkeeping -------------------------------------------------------------------------------
    def _begin(self, stage: str) -> None:
        self.current_stage = stage
        self._open[stage] = self.clock.mark()

    def _end(self, stage: str) -> None:
        end = self.clock.mark()
        start = self._open.pop(stage)
        step = None
        if stage in ("denoiser", "scheduler"):
            count = self._counts.get(stage, 0)
            self._counts[stage] = count + 1
            step = count // self.calls_per_step if stage == "denoiser" else count
        self._raw.append((stage, step, start, end))
        self.current_stage = None

    # -- instrumentation ---------------------------------------------------------------------------
    def _hook_module(self, module, stage: str) -> None:
        pre = module.register_forward_pre_hook(lambda *_: self._begin(stage))
        post = module.register_forward_hook(lambda *_: self._end(stage))
        self._patches.hook(pre)
        self._patches.hook(post)

    def _wrap_method(self, obj, name: str, stage: str) -> None:
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            self._begin(stage)
            try:
                return original(*args, **kwargs)
            except BaseException:
                self.failed_stage = stage
                raise
            finally:
                self._end(stage)

        self._patches.set(obj, name, timed)

    def _wrap_call(self, obj, stage: str) -> None:
        cls = type(obj)
        timer = self

        class Timed(cls):  # type: ignore[misc, valid-type]
            def __call__(self, *args, **kwargs):
                timer._begin(stage)
                try:
                    return cls.__call__(self, *args, **kwargs)
                except BaseException:
                    timer.failed_stage = stage
                    raise
                finally:
                    timer._end(stage)

        Timed.__name__ = cls.__name__
        obj.__class__ = Timed

        self._patches.add(lambda: setattr(obj, "__class__", cls))

    def __enter__(self) -> "StageTimer":
        pipe = self.pipe
        for name in TOKENIZERS:
            if getattr(pipe, name, None) is not None:
                self._wrap_call(getattr(pipe, name), "tokenize")
        for name in text_encoder_names(pipe):
            self._hook_module(getattr(pipe, name), name)
        for module in denoisers(pipe):  # Wan 2.2: the second expert's calls are denoiser time too
            self._hook_module(module, "denoiser")
        self._wrap_method(pipe.scheduler, "step", "scheduler")
        self._wrap_method(pipe.vae, "decode", "vae_decoder")
        return self

    def __exit__(self, *exc) -> None:
        self._patches.restore()

    # -- results -----------------------------------------------------------------------------------
    def mark(self):
        """A time mark on the stage clock (for the whole pipeline call)."""
        return self.clock.mark()

    def events(self) -> list[StageEvent]:
        """All finished intervals so far, in seconds (synchronizes CUDA once)."""
        self.clock.sync()
        return [StageEvent(stage, step, self.clock.seconds(s, e)) for stage, step, s, e in self._raw]

    def clear(self) -> None:
        self._raw.clear()
        self._counts.clear()


def summarize_events(runs: list[list]) -> tuple[dict, dict, list]:
    """Per-stage seconds (median over runs of each run's total), min/max/count stats, and per-step medians."""
    per_run_totals: list[dict[str, float]] = []
    per_step: dict[int, dict[str, list[float]]] = {}
    for events in runs:
        totals: dict[str, float] = {}
        run_steps: dict[tuple[int, str], float] = {}  # a step's calls summed (CFG branches as separate calls)
        for ev in events:
            totals[ev.stage] = totals.get(ev.stage, 0.0) + ev.seconds
            if ev.step is not None:
                run_steps[ev.step, ev.stage] = run_steps.get((ev.step, ev.stage), 0.0) + ev.seconds
        for (step, stage), seconds in run_steps.items():
            per_step.setdefault(step, {}).setdefault(stage, []).append(seconds)
        per_run_totals.append(totals)
    names = [s for s in (*STAGE_ORDER, "total") if any(s in t for t in per_run_totals)]
    stages = {s: statistics.median(t.get(s, 0.0) for t in per_run_totals) for s in names}
    stats = {}
    for s in names:
        vals = [t.get(s, 0.0) for t in per_run_totals]
        stats[s] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals)}
    steps = [
        {"step": i, "denoiser_s": statistics.median(d.get("denoiser", [0.0])),
         "scheduler_s": statistics.median(d.get("scheduler", [0.0]))}
        for i, d in sorted(per_step.items())
    ]
    return stages, stats, steps
