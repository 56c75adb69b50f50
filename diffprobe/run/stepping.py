"""A per-step callback and an early stop after N denoising steps, on every embedded pipeline.

Most diffusers pipelines take ``callback_on_step_end`` and stop when it sets ``_interrupt`` (diffusers' documented
early stop; the VAE still decodes). PixArt-α/Σ take only the older ``callback(step, timestep, latents)`` and swallow
an unknown ``callback_on_step_end`` in ``**kwargs``: there the loop is shortened by handing it the first N of the
scheduler's timesteps (the scheduler itself keeps its full schedule, so each of those steps is the same step as in
the full run), and the VAE decodes after them as it would after an interrupt.
"""

from __future__ import annotations

import contextlib
import inspect
import sys

from diffprobe.patching import patch_attr


def takes_step_end_callback(pipe) -> bool:
    """Whether the pipeline's ``__call__`` takes ``callback_on_step_end`` (and so honours ``_interrupt``)."""
    return "callback_on_step_end" in inspect.signature(type(pipe).__call__).parameters


@contextlib.contextmanager
def step_hooks(pipe, on_step=None, stop_after: int | None = None):
    """Yield the pipeline-call keyword arguments that call ``on_step(i, latents)`` after each denoising step ``i``
    and stop the loop after ``stop_after`` steps (None: run them all)."""
    if takes_step_end_callback(pipe):
        def on_step_end(p, i, t, kw):
            if on_step is not None:
                on_step(i, kw.get("latents"))
            if stop_after is not None and i + 1 >= stop_after:
                p._interrupt = True
            return kw

        yield {"callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": ["latents"]}
        return
    module = sys.modules[type(pipe).__module__]
    original = getattr(module, "retrieve_timesteps", None)
    if stop_after is not None and original is None:
        raise RuntimeError(f"internal: cannot stop {type(pipe).__name__} after {stop_after} steps")

    def first_steps(*args, **kwargs):
        timesteps, count = original(*args, **kwargs)
        return timesteps[:stop_after], count

    kwargs = {}
    if on_step is not None:
        kwargs = {"callback": lambda i, t, latents: on_step(i, latents), "callback_steps": 1}
    undo = patch_attr(module, "retrieve_timesteps", first_steps) if stop_after is not None else None
    try:
        yield kwargs
    finally:
        if undo is not None:
            undo()
