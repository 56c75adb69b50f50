"""The user's weights: a local diffusers folder (or the hub cache's layout of one), or a single ``.safetensors``
file, checked against the architecture it claims to be before anything loads (pipeline class, denoiser, the
architecture's shape-defining config keys), safetensors preferred over pickle files, loaded without any download."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import (
    DENOISERS,
    PICKLE_SUFFIXES,
    TOKENIZER_FILES,
    ModelSpec,
    export_skeleton,
    list_models,
    pipeline_class,
    pipeline_init_kwargs,
)
from diffprobe.models.tokenizer import load_tokenizer

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
    cls = pipeline_class(spec)
    kwargs = dict(pipeline_init_kwargs(spec), local_files_only=True)
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
