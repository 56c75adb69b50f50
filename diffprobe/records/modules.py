"""Where a module sits in a pipeline: its role (attention, FFN, norm, ...), its level in a UNet or diffusion
transformer, the stage a component is, the kind of an attention module, and the token count of a level.

Module classes are recognized by name (diffusers' and transformers' classes, hand-written ones too), so that the
tracer attributes every op without importing the model code."""

from __future__ import annotations

import math
import re

import torch

from diffprobe.records.schema import DENOISER

ATTENTION_MODULES = {"Attention", "CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "FluxAttention",
                     "T5Attention", "Gemma2Attention", "SanaMultiscaleLinearAttention"}
FFN_MODULES = {"FeedForward", "CLIPMLP", "T5LayerFF", "T5DenseGatedActDense", "Gemma2MLP", "GLUMBConv"}
ACT_MODULES = {"GEGLU", "GELU", "ApproximateGELU", "SiLU", "QuickGELUActivation", "GELUActivation", "NewGELUActivation",
               "Mish", "SwiGLU", "GELUTanh", "PytorchGELUTanh"}
EMBED_MODULES = {"Timesteps", "TimestepEmbedding", "CLIPTextEmbeddings", "TextTimeEmbedding",
                 "Gemma2TextScaledWordEmbedding", "CombinedTimestepTextProjEmbeddings",
                 "CombinedTimestepGuidanceTextProjEmbeddings", "PixArtAlphaCombinedTimestepSizeEmbeddings"}


# adaLN: the timestep-conditioned shift / scale / gate of a diffusion transformer (their norm stays ``norm``)
MODULATION_MODULES = {"AdaLayerNormZero", "AdaLayerNormZeroSingle", "AdaLayerNormContinuous", "AdaLayerNormSingle",
                      "AdaLayerNorm", "SanaModulatedNorm"}


# modules whose outputs condition the blocks on the timestep: every elementwise op that reads them is modulation
CONDITIONING_MODULES = {"AdaLayerNormSingle", "CombinedTimestepTextProjEmbeddings",
                        "CombinedTimestepGuidanceTextProjEmbeddings", "PixArtAlphaCombinedTimestepSizeEmbeddings"}
NORM_MODULES = {"T5LayerNorm", "Gemma2RMSNorm", "RMSNorm", "LayerNorm", "GroupNorm",
                "RMSNorm2d"}  # hand-written norms too
ROPE_MODULES = {"FluxPosEmbed", "Gemma2RotaryEmbedding"}  # rotary position tables (their application: ROPE_FUNCTIONS)
LINEAR_ATTN_PROCESSORS = {"SanaLinearAttnProcessor2_0", "SanaMultiscaleAttnProcessor2_0"}
LINEAR_MODULES = {"Linear", "LoRACompatibleLinear"}
CONV_MODULES = {"Conv2d", "LoRACompatibleConv", "Conv1d", "Conv3d"}
QKV_NAMES = {"to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj", "add_q_proj", "add_k_proj", "add_v_proj", "q", "k",
             "v"}
OUT_NAMES = {"to_out.0", "out_proj", "to_add_out", "SelfAttention.o"}


# functions that apply rotary embeddings inside attention: every op they run is ``rope``
ROPE_FUNCTIONS = (("diffusers.", "apply_rotary_emb"), ("transformers.models.gemma2.", "apply_rotary_pos_emb"))


def module_role(module) -> str:
    name = type(module).__name__
    if name in MODULATION_MODULES:
        return "modulation"
    if name in NORM_MODULES or isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
        return "norm"
    if name in ROPE_MODULES:
        return "rope"
    if name in ATTENTION_MODULES:
        return "attention"
    if name in FFN_MODULES:
        return "ffn"
    if name in ACT_MODULES:
        return "act"
    if name in EMBED_MODULES:
        return "embed"
    if name in LINEAR_MODULES or isinstance(module, torch.nn.Linear):
        return "linear"
    if name in CONV_MODULES or isinstance(module, torch.nn.modules.conv._ConvNd):
        return "conv"
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
    m = re.match(r"vae\.decoder\.(up_blocks)\.(\d+)", path)
    if m:
        return "dec.up." + m.group(2)
    if path.startswith("vae.decoder.mid_block"):
        return "dec.mid"
    if path.startswith("vae.decoder") or path.startswith("vae.post_quant_conv"):
        return "dec"
    return ""


DIT_IN = {"pos_embed", "patch_embed", "x_embedder"}
DIT_OUT = {"norm_out", "proj_out"}


def dit_level(path: str, patch_embedder: bool = True, two_streams: bool = False) -> str:
    """The level of a diffusion transformer's module path: ``top`` (its own forward), ``in`` (patch embedding),
    ``embed`` (timestep, guidance, caption and RoPE tables), ``block.i`` (``double.i`` / ``single.i`` in a
    ``two_streams`` transformer such as Flux), ``out`` (final norm and projection). ``patch_embedder``: whether
    the module called ``pos_embed`` embeds patches (PixArt, SD3) rather than making RoPE tables (Flux)."""
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


def attention_kind(module, path: str) -> str:
    """``self``, ``cross``, ``joint`` (text and image tokens in one sequence: SD3, Flux) or ``linear`` (Sana's
    ReLU linear attention) for an attention module."""
    processor = type(getattr(module, "processor", None)).__name__
    if processor in LINEAR_ATTN_PROCESSORS or type(module).__name__ == "SanaMultiscaleLinearAttention":
        return "linear"
    if getattr(module, "add_q_proj", None) is not None or ".single_transformer_blocks." in path:
        return "joint"
    return "cross" if getattr(module, "is_cross_attention", False) else "self"


def den_packs_latents(pipe) -> bool:
    """Whether the pipeline packs 2x2 latent patches into tokens before its transformer (Flux)."""
    return hasattr(type(pipe), "_pack_latents")
