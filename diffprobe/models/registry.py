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
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.models.digits import unpack_into
from diffprobe.models.tokenizer import load_tokenizer

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
DENOISERS = ("unet", "transformer")  # the diffusers component that denoises: a UNet, or a diffusion transformer
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
    family: str = "sd"  # sd (UNet), pixart, sd3, flux, sana: what a family-specific method or option fits
    max_sequence_length: int | None = None  # DiTs: the text tokens the pipeline pads every prompt to

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
    def size_multiple(self) -> int:
        """Image sides must be multiples of this many px: the VAE's downsampling times the transformer's patch
        (times 2 where the pipeline packs 2x2 latents, Flux)."""
        vae = self.config("vae")
        channels = vae.get("block_out_channels") or vae.get("encoder_block_out_channels") or [0]
        factor = 2 ** (len(channels) - 1)
        if self.denoiser == "unet":
            return factor
        patch = int(self.config("transformer").get("patch_size") or 1)
        return factor * patch * (2 if self.family == "flux" else 1)

    def uses_cfg(self, guidance: float) -> bool:
        """Whether a run at ``guidance`` evaluates the denoiser on both CFG branches. Flux is guidance-distilled:
        one pass whatever the scale (FLUX.1-dev embeds the scale; schnell ignores it)."""
        return self.family != "flux" and guidance > 1

    def call_kwargs(self) -> dict:
        """The pipeline-call arguments diffprobe sets for this family beyond the common ones: the text length
        (``max_sequence_length``), no aspect-ratio binning (PixArt and Sana would otherwise change the asked
        size) and no caption cleaning (it needs packages the pipeline imports lazily; the prompt is used as
        given)."""
        kw = {}
        if self.max_sequence_length is not None:
            kw["max_sequence_length"] = self.max_sequence_length
        if self.family in ("pixart", "sana"):
            kw.update(use_resolution_binning=False, clean_caption=False)
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
            family=meta.get("family", "sd"),
            max_sequence_length=meta.get("max_sequence_length"),
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


def build_scheduler(spec: ModelSpec):
    import diffusers

    cfg = spec.config("scheduler")
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
        comps = build_components(spec, "meta")
        params = {k: count_params(v) for k, v in comps.items() if hasattr(v, "parameters")}
        encoders = []
        for i, enc in enumerate(spec.text_encoders):
            tok = f"tokenizer_{i + 1}" if i else "tokenizer"
            settings = spec.config(tok)
            stand_in = is_stand_in(settings)
            tokens = spec.max_sequence_length if stand_in else settings.get("model_max_length", 77)
            encoders.append({"component": enc, "class": type(comps[enc]).__name__, "params": params[enc],
                             "tokens": tokens, "tokenizer": "stand-in" if stand_in else "real CLIP BPE"})
        rows.append({"name": spec.name, "title": spec.title, "family": spec.family,
                     "native_resolution": spec.native_resolution, "pipeline": spec.pipeline_class,
                     "denoiser": spec.denoiser, "denoiser_class": type(comps[spec.denoiser]).__name__,
                     "params": params, "text_encoders": encoders, "steps": spec.default_steps,
                     "guidance": spec.default_guidance, "cfg": spec.uses_cfg(spec.default_guidance)})
    return rows


def _pipeline_class(spec: ModelSpec):
    import diffusers

    return getattr(diffusers, spec.pipeline_class)


def _pipeline_kwargs(spec: ModelSpec) -> dict:
    if spec.pipeline_class == "StableDiffusionPipeline":
        return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if spec.pipeline_class == "StableDiffusionXLPipeline":
        return {"add_watermarker": False}
    return {}


def pipeline_from_components(spec: ModelSpec, components: dict):
    """A diffusers pipeline of the spec's class around the given components."""
    comps = {k: v for k, v in components.items() if k in spec.components}
    return _pipeline_class(spec)(**comps, **_pipeline_kwargs(spec))


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
ARCH_KEYS = ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
             "attention_head_dim", "down_block_types", "up_block_types", "transformer_layers_per_block",
             "addition_embed_type", "projection_class_embeddings_input_dim")


def resolve_hub_cache(p: Path) -> Path:
    """A Hugging Face cache root (``models--org--name``) resolved to the snapshot its ``refs/main`` names, or to
    its only snapshot; any other path unchanged."""
    snaps = p / "snapshots"
    if (p / "model_index.json").exists() or not snaps.is_dir():
        return p
    ref = p / "refs" / "main"
    if ref.is_file() and (snaps / ref.read_text().strip()).is_dir():
        return snaps / ref.read_text().strip()
    found = sorted((d for d in snaps.iterdir() if (d / "model_index.json").is_file()),
                   key=lambda d: d.stat().st_mtime)
    if not found:
        raise DiffprobeError(f"--weights {p} is a Hugging Face cache folder with no complete snapshot")
    return found[-1]


def _weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    files = [f for f in folder.iterdir() if f.is_file()] if folder.is_dir() else []
    return ([f for f in files if f.suffix == ".safetensors"], [f for f in files if f.suffix in PICKLE_SUFFIXES])


def check_weights_path(path: str | Path, allow_pickle: bool, spec: ModelSpec | None = None) -> Path:
    """Validate a ``--weights`` path before any heavy work; return it resolved.

    A folder must hold every component of ``spec`` (when given) with weights this run may load (safetensors;
    pickle only with ``allow_pickle``, for components that lack safetensors), and a UNet of ``spec``'s
    architecture."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DiffprobeError(f"--weights path does not exist: {p}")
    if p.is_file():
        if p.suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise DiffprobeError(
                f"refusing to load pickle checkpoint {p.name} (it can run arbitrary code); "
                "convert it to .safetensors or pass --allow-pickle if you trust it"
            )
        if p.suffix not in (".safetensors",) + PICKLE_SUFFIXES:
            raise DiffprobeError(f"--weights file is not a .safetensors checkpoint: {p}")
        return p
    p = resolve_hub_cache(p)
    if not (p / "model_index.json").is_file():
        raise DiffprobeError(f"--weights folder is not a diffusers model (no model_index.json): {p}")
    if spec is not None:
        _check_pipeline_class(p, spec)
    components = spec.components if spec is not None else ()
    for comp in components:
        if comp.startswith("tokenizer"):
            continue  # a missing tokenizer is replaced by the embedded one
        cfg = "scheduler_config.json" if comp == "scheduler" else "config.json"
        if not (p / comp / cfg).is_file():
            raise DiffprobeError(f"--weights folder {p} has no {comp}/{cfg} ({spec.name} needs its {comp})")
        if comp == "scheduler":
            continue
        tensors, pickles = _weight_files(p / comp)
        if not tensors and not pickles:
            raise DiffprobeError(f"--weights folder {p} has no weights in {comp}/")
        if not tensors and not allow_pickle:
            raise DiffprobeError(f"--weights component {comp} has no safetensors, only pickle weights "
                                 f"({pickles[0].name}); pass --allow-pickle if you trust them")
    if spec is None:
        if not allow_pickle:
            pickles = [f for f in p.rglob("*") if f.suffix in PICKLE_SUFFIXES]
            if pickles and not list(p.rglob("*.safetensors")):
                raise DiffprobeError(f"--weights folder holds only pickle weights ({pickles[0].name}); "
                                     "pass --allow-pickle if you trust them")
        return p
    _check_architecture(p, spec)
    return p


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DiffprobeError(f"--weights folder: unreadable {path} ({exc})") from exc


def _folder_denoiser(folder: Path) -> str | None:
    return next((d for d in DENOISERS if (folder / d / "config.json").is_file()), None)


def _matching_models(folder: Path) -> str:
    """`` (its UNet matches model 'x': use --model x)`` for the embedded model of the folder's denoiser, else
    ``""``."""
    den = _folder_denoiser(folder)
    if den is None:
        return ""
    config = _read_config(folder / den / "config.json")
    matches = [s.name for s in list_models() if s.denoiser == den and _same_arch(config, s.config(den))]
    what = "UNet" if den == "unet" else "transformer"
    return f" (its {what} matches model {matches[0]!r}: use --model {matches[0]})" if matches else ""


def _check_pipeline_class(folder: Path, spec: ModelSpec) -> None:
    """Refuse a folder of another pipeline class than ``spec``'s, naming both."""
    theirs = _read_config(folder / "model_index.json").get("_class_name")
    if theirs is None:
        raise DiffprobeError(f"--weights folder {folder} has a model_index.json that names no pipeline class "
                             f"(no _class_name); --model {spec.name} needs a {spec.pipeline_class} folder")
    if theirs != spec.pipeline_class:
        raise DiffprobeError(f"--weights folder holds a {theirs}, but --model {spec.name} is a "
                             f"{spec.pipeline_class}{_matching_models(folder)}")


def _check_architecture(folder: Path, spec: ModelSpec) -> None:
    """Refuse a folder whose denoiser architecture is not ``spec``'s, naming both."""
    den = spec.denoiser
    theirs = _read_config(folder / den / "config.json")
    if _same_arch(theirs, spec.config(den)):
        return
    named = _matching_models(folder)
    theirs_arch, ours = _arch(theirs), _arch(spec.config(den))
    key = next(k for k in ours if theirs_arch.get(k) != ours[k])
    what = "UNet" if den == "unet" else "transformer"
    raise DiffprobeError(f"--weights {what} is not {spec.name}'s: {key} is {theirs_arch.get(key)!r} there, "
                         f"{ours[key]!r} in {spec.name}{named}")


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _arch(config: dict) -> dict:
    """The architecture of a denoiser config, each missing key at the class's own default (``save_pretrained``
    writes every key; the embedded configs, as published, leave defaults out): a UNet's ARCH_KEYS, a
    transformer's every constructor argument."""
    import inspect

    import diffusers

    name = config.get("_class_name", "UNet2DConditionModel")
    if name == "Transformer2DModel" and config.get("norm_type") == "ada_norm_single":
        name = "PixArtTransformer2DModel"  # PixArt's published checkpoints name the class diffusers remaps so
    cls = getattr(diffusers, name, None)
    params = inspect.signature(cls.__init__).parameters if cls is not None else {}
    keys = ARCH_KEYS if "unet" in (config.get("_class_name") or "unet").lower() else tuple(
        k for k, p in params.items() if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD)
    return {k: _norm(config[k] if k in config else getattr(params.get(k), "default", None)) for k in keys}


def _same_arch(a: dict, b: dict) -> bool:
    return _arch(a) == _arch(b)


def _quiet_loaders() -> None:
    """diffusers' and transformers' own progress bars and warnings off: errors come out as diffprobe's one line."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _dtype_kwarg() -> str:
    """``dtype`` where diffusers takes it (``torch_dtype`` is deprecated there), else ``torch_dtype``."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


def load_pipeline(spec: ModelSpec, weights: str | Path, dtype=None, allow_pickle: bool = False):
    """A pipeline with real weights from a local diffusers folder or a single ``.safetensors`` file.

    Never touches the network: the folder's own configs are used, or, for a single file, the embedded
    architecture's configs (so ``spec`` must describe the checkpoint). Safetensors are always loaded where they
    exist; pickle files only with ``allow_pickle``, for components that have no safetensors.
    """
    import warnings

    path = check_weights_path(weights, allow_pickle, spec)
    cls = _pipeline_class(spec)
    kwargs = dict(_pipeline_kwargs(spec), local_files_only=True)
    if dtype is not None:
        kwargs[_dtype_kwarg()] = dtype
    _quiet_loaders()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if path.is_dir():
                for tok in (c for c in spec.components if c.startswith("tokenizer")):
                    if not any((path / tok / f).is_file() for f in TOKENIZER_FILES):
                        kwargs[tok] = load_tokenizer(spec.config(tok))
                # None: safetensors first, pickle as the fallback of a component without them
                return cls.from_pretrained(str(path), use_safetensors=None if allow_pickle else True, **kwargs)
            with tempfile.TemporaryDirectory(prefix="diffprobe-config-") as tmp:
                skeleton = export_skeleton(spec, Path(tmp) / spec.name)
                return cls.from_single_file(str(path), config=str(skeleton), **kwargs)
    except DiffprobeError:
        raise
    except Exception as exc:  # a corrupt or mismatched checkpoint: one line naming the file
        msg = " ".join(str(exc).split()) or type(exc).__name__
        hint = "; pass --allow-pickle if you trust its pickle weights" if (
            "no file named" in msg and not allow_pickle) else ""
        raise DiffprobeError(f"could not load weights from {path}: {msg[:300]}{hint}") from exc



def denoiser_name(pipe) -> str:
    """The pipeline's denoiser component name: ``unet`` or ``transformer`` (its module paths' prefix)."""
    for name in DENOISERS:
        if getattr(pipe, name, None) is not None:
            return name
    raise DiffprobeError(f"{type(pipe).__name__} has no UNet or transformer denoiser")


def denoiser(pipe):
    """The pipeline's denoiser module (``pipe.unet`` or ``pipe.transformer``)."""
    return getattr(pipe, denoiser_name(pipe))


def text_encoder_names(pipe) -> list[str]:
    """The pipeline's text encoder components, in order."""
    return [n for n in TEXT_ENCODERS if getattr(pipe, n, None) is not None]
