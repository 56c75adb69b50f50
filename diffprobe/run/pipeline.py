"""The diffusers pipeline of a run: built (random, meta or the user's weights), its starting noise, the arguments
of the call the profile makes, and what the call's tokenizers and scheduler imply (prompt cuts, evaluations)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from diffprobe.models.families import family_of
from diffprobe.models.registry import (
    TOKENIZERS,
    ModelSpec,
    build_components,
    denoiser,
    get_spec,
    pipeline_from_components,
    text_encoder_names,
    vae_scale,
)
from diffprobe.models.schedulers import scheduler_from
from diffprobe.models.weights import load_pipeline
from diffprobe.run.config import ProfileConfig, schedule_length


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def build_pipeline(cfg: ProfileConfig, spec: ModelSpec):
    """The diffusers pipeline for a resolved config: on its device and dtype, or on ``meta`` (analytic)."""
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    dtype = _torch_dtype(cfg.dtype)
    if cfg.mode == "analytic":
        pipe = pipeline_from_components(spec, build_components(spec, "meta", cfg.seed)).to(dtype=dtype)
    else:
        if cfg.weights:
            pipe = load_pipeline(spec, cfg.weights, dtype=dtype, allow_pickle=cfg.allow_pickle)
        else:
            pipe = pipeline_from_components(spec, build_components(spec, "random", cfg.seed))
        pipe = pipe.to(cfg.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    if cfg.scheduler is not None:  # the same configuration (the model's, or the user's weights'), another sampler
        pipe.scheduler = scheduler_from(pipe.scheduler.config, cfg.scheduler)
    family_of(pipe).prepare(pipe)
    return pipe


def initial_latents(cfg: ProfileConfig, pipe):
    """The starting noise, made exactly as the pipeline's own ``prepare_latents`` would (same generator call),
    or an empty meta tensor of that shape in analytic mode. Passing it in keeps noise generation out of the
    traced ops, so measured and analytic runs trace the same ops."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    family = family_of(pipe)
    shape = family.latent_shape(denoiser(pipe).config.in_channels, vae_scale(pipe), cfg.batch, cfg.height,
                                cfg.width, cfg.frames or 1)
    # the pipeline makes its latents in the prompt embeddings' dtype (that of the last text encoder); Sana in fp32
    dtype = getattr(torch, family.latent_dtype) if family.latent_dtype else getattr(
        pipe, text_encoder_names(pipe)[-1]).dtype
    if cfg.mode == "analytic":
        latents = torch.empty(shape, dtype=dtype, device="meta")
    else:
        generator = torch.Generator(cfg.device).manual_seed(cfg.seed)
        latents = randn_tensor(shape, generator=generator, device=torch.device(cfg.device), dtype=dtype)
    return family.pack_latents(pipe, latents, shape)


@dataclass(frozen=True)
class PipelineCall:
    """The one pipeline call every run makes (profile, approx, warm-up): the config's size, schedule, guidance and
    noise, on ``prompts`` (None: the config's prompt, ``cfg.batch`` images of it), returning ``output_type``.

    The image comes back as a tensor (``output_type="pt"``) and is turned into PIL outside the traced region, so
    measured and analytic runs trace the same post-processing ops. The starting noise is the pipeline's own
    (:func:`initial_latents`), the same on every call."""

    cfg: ProfileConfig
    prompts: tuple[str, ...] | None = None
    output_type: str = "pt"
    seeds: tuple[int, ...] | None = None  # one per prompt: each image's noise from its own seed (a campaign's)

    def kwargs(self, pipe) -> dict:
        """The call's keyword arguments (without step hooks)."""
        import torch

        cfg = self.cfg
        family_of(pipe).set_size(pipe, cfg.height, cfg.width)
        many = self.prompts is not None
        noise_cfg = replace(cfg, batch=len(self.prompts)) if many else cfg
        return dict(
            prompt=list(self.prompts) if many else cfg.prompt,
            height=cfg.height,
            width=cfg.width,
            num_inference_steps=cfg.steps,
            **get_spec(cfg.model).family.guidance_kwargs(cfg.guidance),
            **{family_of(pipe).count_kwarg: 1 if many else cfg.batch},
            **({"num_frames": cfg.frames} if family_of(pipe).video else {}),
            generator=torch.Generator("cpu" if cfg.mode == "analytic" else cfg.device).manual_seed(cfg.seed),
            latents=initial_latents(noise_cfg, pipe) if self.seeds is None else torch.cat(
                [initial_latents(replace(noise_cfg, batch=1, seed=s), pipe) for s in self.seeds]),
            output_type=self.output_type,
            **get_spec(cfg.model).call_kwargs(),
        )

    def __call__(self, pipe, **hooks):
        """Run the pipeline; ``hooks``: :func:`~diffprobe.run.stepping.step_hooks`' arguments."""
        return pipe(**self.kwargs(pipe), **hooks)


def pipeline_kwargs(cfg: ProfileConfig, pipe) -> dict:
    """The arguments of the pipeline call that the profile makes (:class:`PipelineCall` on the config's prompt)."""
    return PipelineCall(cfg).kwargs(pipe)


def output_of(out):
    """What a pipeline call made: its images, or a video pipeline's frames (a ``pt`` tensor of videos x frames x
    channels x height x width)."""
    images = getattr(out, "images", None)
    return images if images is not None else out.frames


def to_pil(pipe, images) -> list:
    """PIL images from the pipeline's ``pt`` output, as ``output_type="pil"`` would have made them; a video's frames
    as one list of images per video."""
    processor = getattr(pipe, "image_processor", None) or pipe.video_processor
    if images.ndim == 5:
        return [processor.numpy_to_pil(processor.pt_to_numpy(video)) for video in images]
    return processor.numpy_to_pil(processor.pt_to_numpy(images))


def prompt_notes(pipe, prompt: str, max_sequence_length: int | None = None) -> list[str]:
    """A warning for each tokenizer that cuts the prompt (as the pipeline does, silently in diffprobe's output
    otherwise): how many tokens it has and how many its text encoder takes — CLIP's 77, or for a T5 / Gemma
    encoder the pipeline's ``max_sequence_length`` (16 on tiny-flux)."""
    notes, said = [], set()
    for name in TOKENIZERS:
        tok = getattr(pipe, name, None)
        if tok is None:
            continue
        encoder = type(getattr(pipe, name.replace("tokenizer", "text_encoder"), None)).__name__
        clip = encoder.startswith("CLIP")
        limit = tok.model_max_length if clip or max_sequence_length is None else max_sequence_length
        n = len(tok(prompt, truncation=False).input_ids)
        kind = "CLIP" if clip else encoder.replace("EncoderModel", "").replace("Model", "")
        if n > limit and (kind, n, limit) not in said:  # SDXL's two CLIP tokenizers cut at one place: said once
            said.add((kind, n, limit))
            notes.append(f"the prompt is {n} tokens for {name} ({kind}); its text encoder takes {limit}, so the "
                         f"last {n - limit} are cut (as the pipeline does)")
    return notes


def stand_in_notes(pipe) -> list[str]:
    """A line for each tokenizer of the run that is a stand-in (no shipped vocabulary): what it changes."""
    return [f"{name}: {getattr(pipe, name).stand_in_note}" for name in TOKENIZERS
            if getattr(getattr(pipe, name, None), "stand_in", False)]


def count_denoiser_evals(pipe, steps: int, device: str) -> int:
    import copy

    return schedule_length(copy.deepcopy(pipe.scheduler), steps, device)
