"""Embedded model architectures and how to materialize them.

Each architecture is a diffusers-format folder skeleton under ``configs/<name>/`` (``model_index.json`` and one
``config.json`` per component, exactly as the published checkpoints lay them out, minus the weights) plus a
``diffprobe.json`` with our own metadata. Components are always the real diffusers/transformers classes.

Three ways to materialize a model:

* ``random``: seeded random weights (architecture only: timings and FLOPs are real, image content is not);
* ``meta``: the ``meta`` device, no memory and no compute (analytic mode);
* real weights from a local diffusers folder or a single ``.safetensors`` file (``weights=PATH``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.models.digits import unpack_into
from diffprobe.models.families import Family, family_of_class
from diffprobe.models.schedulers import scheduler_from
from diffprobe.models.tokenizer import load_tokenizer

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "text_encoder_4")  # HiDream: four
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3", "tokenizer_4")
DEFAULT_PROMPT = "a photo of an astronaut riding a horse on mars"
DENOISERS = ("unet", "transformer")  # the diffusers component that denoises: a UNet, or a diffusion transformer
EXPERTS = ("transformer_2",)  # a second denoiser the pipeline switches to (Wan 2.2's low-noise expert)
# a tokenizer folder with any of these is the user's own (BPE, fast, SentencePiece: T5's spiece, Gemma's model)
TOKENIZER_FILES = ("vocab.json", "tokenizer.json", "spiece.model", "tokenizer.model")


@dataclass(frozen=True)
class ModelSpec:
    """One embedded architecture."""

    name: str
    title: str
    native_resolution: int  # px, the resolution the model was trained at
    min_resolution: int  # px, smallest side the UNet's down/up path accepts
    pipeline_class: str  # diffusers pipeline class name
    components: tuple[str, ...]  # diffusers component names present in model_index.json
    trained: bool  # whether the embedded weights (if any) are trained; random init is never trained
    weights: str | None = None  # a safetensors file in the config folder: embedded trained weights
    default_guidance: float = 7.5  # CFG scale used when the user gives none (the pipelines' own default is 7.5)
    default_steps: int = 50  # denoising steps when the user gives none (the pipeline's own default)
    family: Family | None = None  # the model's family (from its pipeline class): see models/families
    max_sequence_length: int | None = None  # DiTs: the text tokens the pipeline pads every prompt to
    default_prompt: str = DEFAULT_PROMPT  # the prompt when the user gives none
    quality_batch: str | None = None  # "digits": approx's quality batch is every digit (else the one prompt)
    extra_call_kwargs: tuple = ()  # (name, value) pipeline-call arguments of this model (a tiny variant's layers)
    cfg_distilled: bool = False  # the guidance scale is an input of this model's denoiser (LCM): never a CFG batch
    default_frames: int | None = None  # video: the frames its pipeline makes by default (None: an image model)
    native_height: int | None = None  # px, where the native size is not square (None: native_resolution)

    @property
    def video(self) -> bool:
        """Whether the model makes videos (``--frames`` applies)."""
        return self.family.video

    @property
    def experts(self) -> int:
        """Denoiser components the pipeline switches between over the steps (2: Wan 2.2's high- and low-noise
        experts; else 1)."""
        return 1 + sum(c in self.components for c in EXPERTS)

    @property
    def folder(self):
        return resources.files("diffprobe.models").joinpath("configs", self.name)

    def config(self, component: str) -> dict:
        """The component's config as published (``config.json`` / ``scheduler_config.json`` / tokenizer)."""
        fname = {"scheduler": "scheduler_config.json"}.get(component, "config.json")
        if component.startswith("tokenizer"):
            fname = "tokenizer_config.json"
        return json.loads(self.folder.joinpath(component, fname).read_text())

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return tuple(c for c in TEXT_ENCODERS if c in self.components)

    @property
    def denoiser(self) -> str:
        """The denoiser component: ``unet`` or ``transformer``."""
        return next(c for c in DENOISERS if c in self.components)

    @property
    def vae_factor(self) -> int:
        """The VAE's spatial downsampling (px per latent pixel per side)."""
        if self.family.vae_downsample:
            return self.family.vae_downsample
        vae = self.config("vae")
        channels = (vae.get("block_out_channels") or vae.get("encoder_block_out_channels")
                    or vae.get("dim_mult") or [0])  # dim_mult: the 3D causal VAEs (Qwen-Image, Wan)
        return 2 ** (len(channels) - 1)

    def token_grid(self, height: int, width: int, frames: int | None = None) -> tuple[int, int, int]:
        """The denoiser's token grid at ``height`` x ``width`` (x ``frames`` for a video): latent frames, then a
        DiT's patches (a UNet's latent pixels) down and across."""
        side = self.size_multiple
        return self.family.latent_frames(frames or 1), height // side, width // side

    def tokens(self, height: int, width: int, frames: int | None = None) -> int:
        """Latent tokens per sample the denoiser sees (the product of :meth:`token_grid`)."""
        t, h, w = self.token_grid(height, width, frames)
        return t * h * w

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this many px: the VAE's downsampling times the transformer's patch
        (times 2 where the pipeline packs 2x2 latents, Flux)."""
        factor = self.vae_factor
        if self.denoiser == "unet":
            return factor
        patch = self.family.patch_size(self.config("transformer"))
        return factor * patch * self.family.latent_patch

    def uses_cfg(self, guidance: float) -> bool:
        """Whether a run at ``guidance`` evaluates the denoiser on both CFG branches (not in a guidance-distilled
        family such as Flux, nor a distilled model such as LCM-SDXL: one pass whatever the scale)."""
        return not self.cfg_distilled and self.family.uses_cfg(guidance)

    def calls_per_step(self, guidance: float) -> int:
        """Denoiser calls per denoising step at ``guidance`` (:meth:`Family.calls_per_step`)."""
        return self.family.calls_per_step(guidance)

    def call_kwargs(self) -> dict:
        """The pipeline-call arguments diffprobe sets for this model beyond the common ones: the text length
        (``max_sequence_length``) and its family's (:attr:`Family.call_kwargs`)."""
        kw = {**self.family.call_kwargs, **dict(self.extra_call_kwargs)}
        if self.max_sequence_length is not None:
            kw["max_sequence_length"] = self.max_sequence_length
        return kw


@lru_cache(maxsize=None)
def _specs() -> dict[str, ModelSpec]:
    root = resources.files("diffprobe.models").joinpath("configs")
    specs = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not entry.joinpath("model_index.json").is_file():
            continue
        index = json.loads(entry.joinpath("model_index.json").read_text())
        meta = json.loads(entry.joinpath("diffprobe.json").read_text())
        comps = tuple(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0])
        specs[entry.name] = ModelSpec(
            name=entry.name,
            title=meta["title"],
            native_resolution=int(meta["native_resolution"]),
            min_resolution=int(meta["min_resolution"]),
            pipeline_class=index["_class_name"],
            components=comps,
            trained=bool(meta.get("trained", False)),
            weights=meta.get("weights"),
            default_guidance=float(meta.get("guidance", 7.5)),
            default_steps=int(meta.get("steps", 50)),
            family=family_of_class(index["_class_name"]),
            max_sequence_length=meta.get("max_sequence_length"),
            default_prompt=meta.get("prompt", DEFAULT_PROMPT),
            quality_batch=meta.get("quality_batch"),
            extra_call_kwargs=tuple((k, tuple(v) if isinstance(v, list) else v)
                                    for k, v in (meta.get("call_kwargs") or {}).items()),
            cfg_distilled=bool(meta.get("cfg_distilled", False)),
            default_frames=meta.get("frames"),
            native_height=meta.get("native_height"),
        )
    return specs


def list_models() -> list[ModelSpec]:
    """All embedded architectures, sorted by name."""
    return list(_specs().values())


def get_spec(name: str) -> ModelSpec:
    """The architecture called ``name``; an unknown name is a user error listing the known ones."""
    specs = _specs()
    if name not in specs:
        raise DiffprobeError(f"unknown model {name!r}; known models: {', '.join(specs)}")
    return specs[name]


def build_scheduler(spec: ModelSpec, name: str | None = None):
    """The model's scheduler, or the one ``--scheduler`` names (models/schedulers.py) built from its config."""
    import diffusers

    cfg = spec.config("scheduler")
    if name is not None:
        return scheduler_from(cfg, name)
    return getattr(diffusers, cfg["_class_name"]).from_config(cfg)


def _text_encoder(spec: ModelSpec, component: str):
    import transformers

    cfg = dict(spec.config(component))
    arch = cfg.pop("architectures")[0]
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return getattr(transformers, arch)(config)


def build_module(spec: ModelSpec, component: str):
    import diffusers

    if component in TEXT_ENCODERS:
        return _text_encoder(spec, component)
    cfg = spec.config(component)
    return getattr(diffusers, cfg["_class_name"]).from_config(cfg)


def build_components(spec: ModelSpec, init: str = "random", seed: int = 0) -> dict:
    """Every pipeline component of ``spec`` with ``random`` (seeded) or ``meta`` weights; a spec with embedded
    trained weights (``digits``) gets those instead of random ones."""
    import torch

    if init not in ("random", "meta"):
        raise ValueError(f"init must be 'random' or 'meta', not {init!r}")
    comps: dict = {}
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for name in spec.components:
            if name.startswith("tokenizer"):
                comps[name] = load_tokenizer(spec.config(name))
            elif name == "scheduler":
                comps[name] = build_scheduler(spec)
            elif init == "meta":
                with torch.device("meta"):
                    comps[name] = build_module(spec, name).eval()
            else:
                comps[name] = build_module(spec, name).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    if init == "random" and spec.weights:
        _load_embedded(spec, comps)
    return comps


def _load_embedded(spec: ModelSpec, comps: dict) -> None:
    from importlib.resources import as_file

    from safetensors.torch import load_file

    with as_file(spec.folder.joinpath(spec.weights)) as path:
        if not path.exists():
            raise DiffprobeError(f"model {spec.name}: embedded weights {spec.weights} are missing from the package "
                                 "(train them with scripts/train_digits.py)")
        tensors = load_file(str(path))
    unpack_into({k: v for k, v in comps.items() if hasattr(v, "load_state_dict")}, tensors)


def count_params(module) -> int:
    """Number of parameters of a module (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


_SUMMARIES: dict[tuple[str, str], tuple[str, int]] = {}  # (component, its config) -> class, parameters


def module_summary(spec: ModelSpec, comp: str) -> tuple[str, int]:
    """A module component's class and parameter count, each distinct configuration built once on the meta device per
    process (the models share many: T5-XXL, the CLIPs, SDXL's UNet, HiDream's three variants; a run's memory check
    asks more than once)."""
    import torch

    key = (comp if comp in TEXT_ENCODERS else comp.rstrip("_0123456789"), json.dumps(spec.config(comp), sort_keys=True))
    if key not in _SUMMARIES:
        with torch.device("meta"):
            module = build_module(spec, comp)
        _SUMMARIES[key] = type(module).__name__, count_params(module)
    return _SUMMARIES[key]


def module_components(spec: ModelSpec) -> list[str]:
    """The components that are modules (not tokenizers or the scheduler)."""
    return [c for c in spec.components if not c.startswith("tokenizer") and c != "scheduler"]


def describe_models() -> list[dict]:
    """Every embedded architecture: name, title, family, native resolution, pipeline class, denoiser, parameters
    per component, text encoders with their classes and token counts, tokenizers (real or stand-in), default
    steps and guidance (built on the meta device: nothing allocated; once per process)."""
    import copy

    return copy.deepcopy(_describe_models())


@lru_cache(maxsize=1)
def _describe_models() -> list[dict]:
    from diffprobe.models.tokenizer import is_stand_in

    rows = []
    for spec in list_models():
        modules = {c: module_summary(spec, c) for c in module_components(spec)}
        params = {k: n for k, (_, n) in modules.items()}
        encoders = []
        for i, enc in enumerate(spec.text_encoders):
            tok = f"tokenizer_{i + 1}" if i else "tokenizer"
            settings = spec.config(tok)
            stand_in = is_stand_in(settings)
            tokens = spec.max_sequence_length if stand_in else settings.get("model_max_length", 77)
            encoders.append({"component": enc, "class": modules[enc][0], "params": params[enc],
                             "tokens": tokens, "tokenizer": "stand-in" if stand_in else "real CLIP BPE"})
        rows.append({"name": spec.name, "title": spec.title, "family": spec.family.name,
                     "native_resolution": spec.native_resolution, "native_height": spec.native_height,
                     "frames": spec.default_frames, "pipeline": spec.pipeline_class,
                     "denoiser": spec.denoiser, "denoiser_class": modules[spec.denoiser][0],
                     "params": params, "text_encoders": encoders, "steps": spec.default_steps,
                     "guidance": spec.default_guidance, "cfg": spec.uses_cfg(spec.default_guidance),
                     "cfg_distilled": spec.family.cfg_distilled or spec.cfg_distilled})
    return rows


def pipeline_class(spec: ModelSpec):
    import diffusers

    return getattr(diffusers, spec.pipeline_class)


def pipeline_init_kwargs(spec: ModelSpec) -> dict:
    """What the pipeline's constructor takes beside the components: SD's switches, and the settings its
    ``model_index.json`` holds (Wan 2.2's ``boundary_ratio``, the step at which its second expert takes over)."""
    if spec.pipeline_class == "StableDiffusionPipeline":
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if spec.pipeline_class == "StableDiffusionXLPipeline":
        return {"add_watermarker": False}
    index = json.loads(spec.folder.joinpath("model_index.json").read_text())
    return {k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list) and v is not None}


def pipeline_from_components(spec: ModelSpec, components: dict):
    """A diffusers pipeline of the spec's class around the given components."""
    comps = {k: v for k, v in components.items() if k in spec.components}
    return pipeline_class(spec)(**comps, **pipeline_init_kwargs(spec))


def export_skeleton(spec: ModelSpec, dest: Path) -> Path:
    """Write the spec's diffusers-format folder (configs and tokenizer files, no weights) to ``dest``."""
    from importlib.resources import as_file

    with as_file(spec.folder) as src:
        shutil.copytree(src, dest, dirs_exist_ok=True)
    for tok in (c for c in spec.components if c.startswith("tokenizer")):
        load_tokenizer(spec.config(tok)).save_pretrained(str(dest / tok))
    (dest / "diffprobe.json").unlink(missing_ok=True)
    return dest


# the UNet config keys that fix the architecture (a fine-tune keeps them; another model changes some)


def vae_scale(pipe) -> int:
    """How many px one latent pixel covers per side (the VAE's spatial downsampling): ``vae_scale_factor``, or a
    video pipeline's ``vae_scale_factor_spatial``."""
    for name in ("vae_scale_factor", "vae_scale_factor_spatial", "vae_spatial_compression_ratio",  # LTX
                 "vae_spatial_scale_factor"):  # Mochi
        if getattr(pipe, name, None):
            return int(getattr(pipe, name))
    raise DiffprobeError(f"{type(pipe).__name__} says no VAE scale factor")


def denoiser_name(pipe) -> str:
    """The pipeline's denoiser component name: ``unet`` or ``transformer`` (its module paths' prefix)."""
    for name in DENOISERS:
        if getattr(pipe, name, None) is not None:
            return name
    raise DiffprobeError(f"{type(pipe).__name__} has no UNet or transformer denoiser")


def denoiser(pipe):
    """The pipeline's denoiser module (``pipe.unet`` or ``pipe.transformer``)."""
    return getattr(pipe, denoiser_name(pipe))


def denoiser_names(pipe) -> tuple[str, ...]:
    """Every denoiser component the pipeline calls: its denoiser and, where it has one, the expert it switches to
    for the later steps (Wan 2.2's ``transformer_2``)."""
    return (denoiser_name(pipe), *(n for n in EXPERTS if getattr(pipe, n, None) is not None))


def denoisers(pipe) -> list:
    """The modules of :func:`denoiser_names`."""
    return [getattr(pipe, n) for n in denoiser_names(pipe)]


def text_encoder_names(pipe) -> list[str]:
    """The pipeline's text encoder components, in order."""
    return [n for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None]
