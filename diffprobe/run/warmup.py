"""One untimed step before timed runs, so that first-call costs (and kernel compiles) stay out of them."""

from __future__ import annotations

import contextlib
import time

import torch

from diffprobe.attention.approx import ApproxAttention
from diffprobe.attention.core import installed_in
from diffprobe.run.pipeline import PipelineCall
from diffprobe.run.stepping import step_hooks


def warm_up(pipe, cfg, prompts: list[str], core: ApproxAttention | None = None) -> float:
    """One untimed denoising step (no VAE decode), so that first-call costs stay out of the timed runs: with no
    core, the pipeline's own (CUDA context, library handles, allocator); with a core that compiles kernels on
    first use of a shape (the block-sparse kernel), the compiling — for every attention shape, whatever this
    step's masks keep; the core's calls are then forgotten. Returns its seconds."""
    if core is not None and not core.compiles:
        return 0.0
    t0 = time.perf_counter()
    if core is not None:
        core.warming = True
    try:
        # the run's own schedule, stopped after its first step (PixArt's pipeline cannot run a one-step schedule)
        with torch.inference_mode(), installed_in(pipe, core.core) if core else contextlib.nullcontext(), \
                step_hooks(pipe, None, 1) as hooks:
            PipelineCall(cfg, tuple(prompts), output_type="latent")(pipe, **hooks)
    finally:
        if core is not None:
            core.warming = False
            core.reset()
    return time.perf_counter() - t0
