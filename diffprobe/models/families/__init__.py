"""Model families: what diffprobe knows of each kind of pipeline, in one place.

A :class:`Family` says which diffusers pipelines belong to it, what denoises (a UNet or a diffusion transformer),
how its latents are laid out (2x2 packing, the dtype the pipeline makes them in), whether classifier-free guidance
runs a second pass, the pipeline-call arguments diffprobe sets, the level rule (module path -> level), where joint
attention's text keys sit, the module classes its own layers are built of (beyond the shared ones of
``records/modules.py``), whether approximate attention applies, and its tiny variant. The tracer, the attention
seam, the reuse methods, the run and the report ask the family; nothing outside ``models/`` tests a class or
pipeline name. One module per family (``sd.py``, ``flux.py``, ...); a new family is a new module here, named in
:data:`MODULES`, and a config folder.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import lru_cache

from diffprobe.errors import DiffprobeError
from diffprobe.models.families.levels import dit_level, unet_level

# the keys of Family.modules: module roles, plus linear attention's modules and processors and the functions that
# apply rotary embeddings ((module prefix, name) pairs)
ROLES = ("attention", "ffn", "act", "embed", "modulation", "conditioning", "norm", "rope", "linear", "conv",
         "linear_attention", "linear_attention_processor", "rope_function", "moe", "moe_router")


@dataclass(frozen=True)
class Family:
    """One model family (see the module's docstring)."""

    name: str  # as stored in run.json ("sd", "sdxl", ..., "hidream", "wan", ..., "hunyuanvideo": MODULES)
    title: str
    pipelines: tuple[str, ...]  # the diffusers pipeline classes of the family
    denoiser_kind: str  # "unet" or "transformer" (the diffusers component that denoises)
    tiny: str  # the family's tiny variant (tests; the smaller model an error suggests)
    packs_latents: bool = False  # the caller packs 2x2 latent patches into tokens (FLUX.1's ``latents`` argument)
    latent_patch: int = 1  # latent pixels per token side beyond the transformer's patch (2x2 packing: 2)
    latent_dtype: str | None = None  # the dtype the pipeline makes its latents in; None: the last text encoder's
    cfg_distilled: bool = False  # guidance is an input of the model: one denoiser pass whatever the scale (Flux)
    cfg_above: float = 1.0  # classifier-free guidance runs at scales above this (Z-Image: any scale above 0)
    cfg_calls: bool = False  # the CFG branches are two denoiser calls per step, not one batch of two (Qwen-Image)
    call_kwargs: dict = field(default_factory=dict)  # pipeline-call arguments beyond the common ones
    text_keys: str = "end"  # joint attention: where the text keys sit in the sequence ("start": Flux; "end": SD3)
    two_streams: bool = False  # double-stream then single-stream blocks (Flux): levels double.i / single.i
    pos_embed_embeds_patches: bool = True  # the transformer's ``pos_embed`` embeds patches (False: RoPE tables)
    # blocks whose attention is joint (text and image in one sequence) though no added projections say so
    joint_paths: tuple[str, ...] = ()
    cross_paths: tuple[str, ...] = ()  # path endings of cross-attention modules whose class does not say (LTX)
    image_levels: tuple[str, ...] = ("top", "in", "out", "block.", "double.", "single.")  # levels over image tokens
    # a transformer's top-level children whose level its rule does not say: child name -> level (Qwen-Image's
    # img_in and LTX-Video's proj_in embed the patches: "in"; CogVideoX's norm_final: "out")
    level_names: dict = field(default_factory=dict)
    # a module's attribute name -> its role, where no class says it ("name.*": the children of a container so named)
    path_roles: dict = field(default_factory=dict)
    # an attention layer's projections named otherwise than diffusers' own (to_q, add_q_proj, to_out.0, ...):
    # attribute name -> "qkv" or "out"
    projections: dict = field(default_factory=dict)
    approx_unsupported: str | None = None  # why the approximate attention methods are not offered yet
    no_softmax: str | None = None  # why approximate attention does not apply (its attention has no softmax)
    modules: dict = field(default_factory=dict)  # role -> class names of the family's own layers
    min_steps: int = 1  # the fewest denoising steps its pipeline can run
    schedulers: tuple[str, ...] = ("flow-euler",)  # what --scheduler may choose (models/schedulers.py)
    min_steps_why: str = ""
    # a method package's own pipeline loop per pipeline class: {package: {pipeline class: module}} (T-GATE's)
    package_loops: dict = field(default_factory=dict)
    # video: frames per latent frame of the VAE (latent frames = (frames - 1) / this + 1); 0: an image family
    temporal_compression: int = 0
    count_kwarg: str = "num_images_per_prompt"  # the pipeline-call argument for outputs per prompt
    vae_downsample: int = 0  # the VAE's px per latent pixel per side, where its config's channel list does not say

    @property
    def video(self) -> bool:
        """Whether the family makes videos (its pipelines take ``num_frames``)."""
        return self.temporal_compression > 0

    def latent_frames(self, frames: int) -> int:
        """Latent frames for ``frames`` video frames (1 for an image family)."""
        return (frames - 1) // self.temporal_compression + 1 if self.video else 1

    def level(self, path: str) -> str:
        """The level of a module path of this family's denoiser or VAE decoder."""
        parts = path.split(".", 2)
        if len(parts) > 1 and parts[0].startswith("transformer") and parts[1] in self.level_names:
            return self.level_names[parts[1]]
        if self.denoiser_kind == "unet":
            return unet_level(path)
        return dit_level(path, self.pos_embed_embeds_patches, self.two_streams)

    def latent_shape(self, channels: int, scale: int, batch: int, height: int, width: int,
                     frames: int = 1) -> tuple[int, ...]:
        """The shape of the starting noise the pipeline's ``latents`` argument takes, for ``channels`` transformer
        input channels and a VAE that downsamples by ``scale``: FLUX.1 takes it unpacked (a quarter of the channels,
        packed by :meth:`pack_latents`), FLUX.2 with its 2x2 patches as channels (it packs them itself); a video
        family's has a latent-frame axis after the channels."""
        s = scale * self.latent_patch
        if self.video:
            return batch, channels, self.latent_frames(frames), height // s, width // s
        if self.packs_latents:
            return batch, channels // 4, 2 * (height // s), 2 * (width // s)
        return batch, channels, height // s, width // s

    def pack_latents(self, pipe, latents, shape: tuple[int, ...]):
        """The starting noise as the pipeline's ``latents`` argument (FLUX.1: packed into tokens)."""
        return type(pipe)._pack_latents(latents, *shape) if self.packs_latents else latents

    def patch_size(self, config: dict) -> int:
        """The transformer's patch side in latent pixels, from its config (1 for a UNet; a video transformer's
        (frames, height, width) patch: its width)."""
        patch = config.get("patch_size") or 1
        return int(patch[-1] if isinstance(patch, (list, tuple)) else patch)

    def meta_adapter(self, pipe):
        """Analytic mode: a change the family's pipeline needs to run on meta tensors, as an undo function (None:
        none needed)."""
        return None

    def prepare(self, pipe) -> None:
        """What the family's pipeline makes once and keeps (tables a first call would make), made when it is built."""

    def uses_cfg(self, guidance: float) -> bool:
        """Whether a run at ``guidance`` evaluates the denoiser on both CFG branches."""
        return not self.cfg_distilled and guidance > self.cfg_above

    def calls_per_step(self, guidance: float) -> int:
        """Denoiser calls per denoising step at ``guidance``: 2 where the CFG branches are separate calls
        (:attr:`cfg_calls`) and guidance runs, else 1 (both branches, if any, in one batch)."""
        return 2 if self.cfg_calls and self.uses_cfg(guidance) else 1

    def package_loop(self, pipe, package: str) -> str | None:
        """The module of ``package``'s own loop for this pipeline (:attr:`package_loops`), or None."""
        return self.package_loops.get(package, {}).get(type(pipe).__name__)

    def text_tokens(self, args: tuple, kwargs: dict) -> int:
        """How many text keys joint attention holds, from the denoiser call's arguments: the caption's length
        (``encoder_hidden_states``; 0 where the call has none)."""
        ehs = kwargs.get("encoder_hidden_states")
        return int(ehs.shape[1]) if ehs is not None and hasattr(ehs, "shape") else 0

    def size_problem(self, config: dict, height: int, width: int) -> str | None:
        """Why the transformer (``config``: its config) cannot take ``height`` x ``width`` beyond the size grid
        (None: it can)."""
        return None

    def set_size(self, pipe, height: int, width: int) -> None:
        """Before a call at ``height`` x ``width``: what the pipeline needs to render that size (HiDream)."""

    def moe(self, pipe, analytic: bool) -> dict | None:
        """The denoiser's mixture of experts (layers, experts, top-k, parameters in all and active per token, how
        the routing was counted), or None without one."""
        return None

    def guidance_kwargs(self, guidance: float) -> dict:
        """The pipeline-call arguments that set the guidance scale (most pipelines: ``guidance_scale``)."""
        return {"guidance_scale": guidance}


# one module each, in this package
MODULES = ("sd", "sdxl", "pixart", "sd3", "flux", "flux2", "sana", "zimage", "qwenimage", "hidream",
           "wan", "cogvideox", "ltx", "mochi", "hunyuanvideo")  # the last five: video


@lru_cache(maxsize=None)
def families() -> dict[str, Family]:
    """Every family by name (each module's ``FAMILY``)."""
    out = {}
    for name in MODULES:
        fam = importlib.import_module(f"{__name__}.{name}").FAMILY
        unknown = set(fam.modules) - set(ROLES)
        if unknown:  # a misspelt role would declare classes nothing reads
            raise ValueError(f"family {fam.name}: unknown module roles {sorted(unknown)}; roles are {ROLES}")
        out[fam.name] = fam
    return out


def get_family(name: str) -> Family:
    fams = families()
    if name not in fams:
        raise DiffprobeError(f"unknown model family {name!r}; known: {', '.join(fams)}")
    return fams[name]


def family_of(pipe) -> Family:
    """The family of a built pipeline, from its class (the one place a pipeline's class is read)."""
    return family_of_class(type(pipe).__name__)


def family_of_class(cls: str) -> Family:
    """The family of the diffusers pipeline class called ``cls`` (``model_index.json``'s ``_class_name``)."""
    for fam in families().values():
        if cls in fam.pipelines:
            return fam
    raise DiffprobeError(f"diffprobe knows no model family of {cls}; known: "
                         + ", ".join(p for f in families().values() for p in f.pipelines))


@lru_cache(maxsize=None)
def module_classes(role: str) -> frozenset[str]:
    """The class names every family declares for ``role`` (one of :data:`ROLES`)."""
    return frozenset(n for fam in families().values() for n in fam.modules.get(role, ()))
