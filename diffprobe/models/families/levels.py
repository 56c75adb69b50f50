"""Level rules: a module path to its level (where in the denoiser or VAE decoder it sits), shared by the families.

UNets: ``top``, ``in``, ``embed``, ``down.i``, ``mid``, ``up.i``, ``out``; diffusion transformers: ``top``, ``in``
(patch embedding), ``embed`` (timestep, guidance, caption and RoPE tables), ``block.i`` (``double.i`` /
``single.i`` with two streams), ``out``; the VAE decoder: ``dec``, ``dec.mid``, ``dec.up.i``; else ``""``.
"""

from __future__ import annotations

import re


def vae_level(path: str) -> str:
    """The VAE decoder's levels: ``dec.up.i``, ``dec.mid``, ``dec``; else ``""``."""
    m = re.match(r"vae\.decoder\.(up_blocks)\.(\d+)", path)
    if m:
        return "dec.up." + m.group(2)
    if path.startswith("vae.decoder.mid_block"):
        return "dec.mid"
    if path.startswith("vae.decoder") or path.startswith("vae.post_quant_conv"):
        return "dec"
    return ""


def unet_level(path: str) -> str:
    """The level of a module path: UNet ``top``, ``in``, ``embed``, ``down.i``, ``mid``, ``up.i``, ``out``;
    VAE decoder ``dec``, ``dec.mid``, ``dec.up.i``; else ``""``."""
    if path == "unet":
        return "top"  # the UNet's own forward, outside any block (timestep broadcast, casts)
    m = re.match(r"unet\.(down_blocks|up_blocks)\.(\d+)", path)
    if m:
        return ("down." if m.group(1) == "down_blocks" else "up.") + m.group(2)
    if path.startswith("unet.mid_block"):
        return "mid"
    if path.startswith("unet.conv_in"):
        return "in"
    if path.startswith(("unet.conv_norm_out", "unet.conv_out", "unet.conv_act")):
        return "out"
    if path.startswith(("unet.time_", "unet.add_", "unet.class_", "unet.encoder_hid")):
        return "embed"
    return vae_level(path)


DIT_IN = {"pos_embed", "patch_embed", "x_embedder"}
DIT_OUT = {"norm_out", "proj_out"}


def dit_level(path: str, patch_embedder: bool = True, two_streams: bool = False) -> str:
    """The level of a diffusion transformer's module path: ``top`` (its own forward), ``in`` (patch embedding),
    ``embed`` (timestep, guidance, caption and RoPE tables), ``block.i`` (``double.i`` / ``single.i`` in a
    ``two_streams`` transformer such as Flux), ``out`` (final norm and projection); the VAE decoder's levels.
    ``patch_embedder``: whether the module called ``pos_embed`` embeds patches (PixArt, SD3) rather than making
    RoPE tables (Flux)."""
    if not path.startswith("transformer"):
        return vae_level(path)
    if path == "transformer":
        return "top"
    m = re.match(r"transformer\.(transformer_blocks|single_transformer_blocks)\.(\d+)", path)
    if m:
        kind = ("single." if m.group(1) == "single_transformer_blocks" else "double.") if two_streams else "block."
        return kind + m.group(2)
    head = path.split(".")[1] if "." in path else ""
    if head in DIT_IN and (head != "pos_embed" or patch_embedder):
        return "in"
    if head in DIT_OUT:
        return "out"
    return "embed" if head else ""


def named_block_level(path: str, blocks: dict[str, str], ends: dict[str, str]) -> str:
    """A diffusion transformer's level where its block lists and its ends have names of their own: ``top``; a
    module under ``transformer.<list>.<i>`` is ``blocks[list] + i`` (``{"layers": "block."}``); a top-level child
    named in ``ends`` is that level (``{"x_embedder": "in", "final_layer": "out"}``), any other ``embed``; the VAE
    decoder's levels (Z-Image, HiDream). A second expert (``transformer_2``, Wan 2.2's) has the same levels."""
    if not path.startswith("transformer"):
        return vae_level(path)
    if "." not in path:  # the transformer's (or an expert's) own forward
        return "top"
    parts = path.split(".")
    if len(parts) > 2 and parts[1] in blocks and parts[2].isdigit():
        return blocks[parts[1]] + parts[2]
    return ends.get(parts[1], "embed")
