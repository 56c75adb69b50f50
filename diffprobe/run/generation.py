"""One generation of a pipeline for quality comparisons (approx's rows, a campaign's chunks): timed, the latents of
every step kept, images in [0, 1]."""

from __future__ import annotations

import contextlib
import time

import torch

from diffprobe.attention.core import installed_in
from diffprobe.models.registry import get_spec
from diffprobe.run.pipeline import PipelineCall, output_of
from diffprobe.run.stepping import step_hooks
from diffprobe.timing.stages import StageTimer


def generate(pipe, cfg, prompts: list[str], core=None, seeds: list[int] | None = None) -> dict:
    """One timed generation (same noise every call; ``seeds``: each image's noise from its own); images in [0, 1],
    latents after each step."""

    steps: list[torch.Tensor] = []

    def keep(i, latents):
        steps.append(latents.detach().float().clone())

    timer = StageTimer(pipe, cfg.device, get_spec(cfg.model).calls_per_step(cfg.guidance))
    with torch.inference_mode(), timer, installed_in(pipe, core) if core else contextlib.nullcontext(), \
            step_hooks(pipe, keep) as hooks:
        t0 = time.perf_counter()
        call = PipelineCall(cfg, tuple(prompts), seeds=tuple(seeds) if seeds is not None else None)
        images = output_of(call(pipe, **hooks))  # the same noise every call
        wall = time.perf_counter() - t0
    denoiser_s = sum(e.seconds for e in timer.events() if e.stage == "denoiser")
    if images.ndim == 5:  # a video model's (videos, frames, channels, h, w): scored and shown frame by frame
        images = images.flatten(0, 1)
    return {"images": images.float().cpu(), "latents": steps, "denoiser_s": denoiser_s, "wall_s": wall}
