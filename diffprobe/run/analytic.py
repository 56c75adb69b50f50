"""Analytic mode: the real pipeline on the ``meta`` device — every op's shapes, no weights, no compute.

Two small adapters make diffusers' own pipeline run on meta tensors while tracing exactly the ops a real run
executes:

* the scheduler keeps its timesteps on the CPU (its indexing by timestep is data-dependent), and its ``step``
  runs on the meta latents, so nothing proportional to the image is allocated. The traced ops are the same aten
  ops on the same shapes as in a measured run (tested per scheduler class of the embedded models);
* UNet evaluations after the first are *replayed*: every denoising step runs the same UNet on same-shaped
  inputs, so its op records are copied (``replayed=True``) instead of re-dispatching ~thousands of meta ops.
  A test checks replayed records equal traced ones. With a step-level reuse method, steps replay the first
  traced step of the same kind (the method's ``plan_key``: a full or a cached DeepCache step).
"""

from __future__ import annotations

import functools

import torch
from torch.utils._pytree import tree_map

from diffprobe.models.families import family_of
from diffprobe.models.registry import denoiser_name, denoisers
from diffprobe.patching import Patches, patch_attr


def _shape_key(args, kwargs) -> tuple:
    from torch.utils._pytree import tree_flatten

    leaves = tree_flatten((args, kwargs))[0]
    return tuple((tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__ for x in leaves)


class MetaAdapters:
    """Context manager installing the scheduler and UNet-replay adapters on a meta pipeline."""

    def __init__(self, pipe, tracer, replay: bool = True, plan=None):
        self.pipe, self.tracer, self.replay, self.plan = pipe, tracer, replay, plan  # plan(step): reuse's step kind
        self._patches = Patches()

    def __enter__(self) -> "MetaAdapters":
        sched, tracer = self.pipe.scheduler, self.tracer
        set_timesteps, step = sched.set_timesteps, sched.step

        @functools.wraps(set_timesteps)  # the pipelines inspect its signature (Flux: does it take sigmas?)
        def cpu_set_timesteps(*args, **kwargs):
            kwargs["device"] = "cpu"
            return set_timesteps(*args, **kwargs)

        def meta_step(model_output, timestep, sample, *args, **kwargs):
            # the step's elementwise ops run on the meta tensors themselves (timesteps and sigmas stay on the
            # CPU as 0-dim scalars), so nothing proportional to the image is ever allocated
            result = step(model_output, timestep, sample, *args, **kwargs)
            was, tracer.suppress = tracer.suppress, True
            try:
                return tuple(_as_meta(r) for r in result) if isinstance(result, tuple) else _to_meta_output(result)
            finally:
                tracer.suppress = was

        self._patches.set(sched, "set_timesteps", cpu_set_timesteps)
        self._patches.set(sched, "step", meta_step)
        self._patches.add(_masks_kept())
        undo = family_of(self.pipe).meta_adapter(self.pipe)
        if undo is not None:
            self._patches.add(undo)

        for module in denoisers(self.pipe):  # Wan 2.2: its second expert too, replayed from its own calls
            self._adapt_denoiser(module, tracer)
        return self

    def _adapt_denoiser(self, unet, tracer) -> None:
        """A denoiser module's forward for meta: its inputs moved to meta (a transformer's), and each call after
        the first of its shapes (and plan key, and CFG branch) replayed from that one's records."""
        # the scheduler's timestep is a CPU tensor: a UNet moves it to its sample's device itself, a transformer
        # expects the pipeline to have done so. Moved to meta untraced (a measured run has no such copy); a UNet's
        # own move is traced as in a measured run.
        inner = unet.forward

        def meta_inputs_forward(*args, **kwargs):
            was, tracer.suppress = tracer.suppress, True
            try:
                args, kwargs = tree_map(_as_meta, (args, kwargs))
            finally:
                tracer.suppress = was
            return inner(*args, **kwargs)

        if denoiser_name(self.pipe) != "unet":
            self._patches.set(unet, "forward", meta_inputs_forward)

        if self.replay:
            forward = unet.forward
            cache: dict = {}

            def replaying_forward(*args, **kwargs):
                step_now, branch = tracer.denoiser_step, tracer.branch  # this call's (the tracer saw it begin)
                key = (_shape_key(args, kwargs), self.plan(step_now) if self.plan else None, branch)
                if key in cache:
                    first_row, n_rows, output = cache[key]
                    tracer.replay(first_row, n_rows, step_now)
                    return output
                first = len(tracer.rows)
                output = forward(*args, **kwargs)
                cache[key] = (first, len(tracer.rows) - first, output)
                return output

            self._patches.set(unet, "forward", replaying_forward)

    def __exit__(self, *exc) -> None:
        self._patches.restore()


def _masks_kept():
    """transformers skips an all-ones padding mask, a data-dependent test meta tensors cannot answer: on meta, the
    mask is kept, as in a measured run whose prompt is shorter than the text encoder's padded length (the pipelines
    pad to it). Returns the undo."""
    try:
        from transformers import masking_utils
    except ImportError:  # an older transformers decides without looking at the mask
        return lambda: None
    original = masking_utils.is_tracing

    def is_tracing(tensor=None):
        return original(tensor) or (isinstance(tensor, torch.Tensor) and tensor.device.type == "meta")

    return patch_attr(masking_utils, "is_tracing", is_tracing)


def _as_meta(x):
    return torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) and x.device.type != "meta" else x


def _to_meta_output(result):
    """A scheduler output object with its tensors on meta (``prev_sample`` etc.)."""
    for key, value in list(result.items()):
        result[key] = _as_meta(value)
    return result



