"""Where a module sits in a pipeline: its role (attention, FFN, norm, ...), its level in a UNet or diffusion
transformer, the stage a component is, the kind of an attention module, and the token count of a level.

A module's role and kind come from ``models/families/roles.py`` (the one place a module's class is read); its
level from its family's level rule."""

from __future__ import annotations

import math

from diffprobe.records.schema import DENOISER

QKV_NAMES = {"to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj", "add_q_proj", "add_k_proj", "add_v_proj", "q", "k",
             "v"}
OUT_LEAVES = {"out_proj", "to_add_out"}  # an output projection called by its own name
OUT_NAMES = {"to_out.0", "out_proj", "to_add_out", "SelfAttention.o"}


def image_tokens(latent_hw: tuple[int, int], patch: int) -> int:
    """A diffusion transformer's image tokens for a latent of ``latent_hw`` and patches of ``patch`` latent px."""
    return math.ceil(latent_hw[0] / patch) * math.ceil(latent_hw[1] / patch)


def level_tokens(level: str, latent_hw: tuple[int, int], n_levels: int) -> int:
    """Latent tokens (h*w) at a UNet level, for a latent of ``latent_hw`` and ``n_levels`` resolution levels."""
    h, w = latent_hw
    if level in ("in", "out"):
        depth = 0
    elif level.startswith("down."):
        depth = int(level[5:])
    elif level == "mid":
        depth = n_levels - 1
    elif level.startswith("up."):
        depth = n_levels - 1 - int(level[3:])
    else:
        return 0
    return math.ceil(h / 2**depth) * math.ceil(w / 2**depth)


def stage_of(component: str, path: str, denoiser: str = "unet") -> str:
    if component == "vae":
        return "vae_encoder" if path.startswith(("vae.encoder", "vae.quant_conv")) else "vae_decoder"
    return DENOISER if component == denoiser else component
