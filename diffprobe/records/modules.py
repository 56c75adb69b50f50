"""Where a module sits in a pipeline: its role (attention, FFN, norm, ...), its level in a UNet or diffusion
transformer, the stage a component is, the kind of an attention module, and the token count of a level.

Module classes are recognized by name (diffusers' and transformers' classes, hand-written ones too), so that the
tracer attributes every op without importing the model code."""

from __future__ import annotations

import math

import torch

from diffprobe.models.families import module_classes
from diffprobe.models.families.levels import DIT_IN, DIT_OUT, dit_level, unet_level  # noqa: F401 (named here)
from diffprobe.records.schema import DENOISER

# The shared vocabulary: diffusers' building blocks and the text encoders several families use; each family adds
# the classes of its own layers (models/families: ``Family.modules``), merged here by role.
ATTENTION_MODULES = {"Attention", "CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2",
                     "T5Attention"} | module_classes("attention")
FFN_MODULES = {"FeedForward", "CLIPMLP", "T5LayerFF", "T5DenseGatedActDense"} | module_classes("ffn")
ACT_MODULES = {"GEGLU", "GELU", "ApproximateGELU", "SiLU", "QuickGELUActivation", "GELUActivation", "NewGELUActivation",
               "Mish", "SwiGLU", "GELUTanh", "PytorchGELUTanh"} | module_classes("act")
EMBED_MODULES = {"Timesteps", "TimestepEmbedding", "CLIPTextEmbeddings", "TextTimeEmbedding"} | module_classes("embed")


# adaLN: the timestep-conditioned shift / scale / gate of a diffusion transformer (their norm stays ``norm``)
MODULATION_MODULES = {"AdaLayerNormZero", "AdaLayerNormContinuous", "AdaLayerNormSingle",
                      "AdaLayerNorm"} | module_classes("modulation")


# modules whose outputs condition the blocks on the timestep: every elementwise op that reads them is modulation
CONDITIONING_MODULES = {"AdaLayerNormSingle"} | module_classes("conditioning")
NORM_MODULES = {"T5LayerNorm", "RMSNorm", "LayerNorm", "GroupNorm",
                "RMSNorm2d"} | module_classes("norm")  # hand-written norms too
ROPE_MODULES = set(module_classes("rope"))  # rotary position tables (their application: ROPE_FUNCTIONS)
LINEAR_ATTN_PROCESSORS = set(module_classes("linear_attention_processor"))
LINEAR_ATTENTION_MODULES = set(module_classes("linear_attention"))  # attention modules that are linear attention
LINEAR_MODULES = {"Linear", "LoRACompatibleLinear"} | module_classes("linear")
CONV_MODULES = {"Conv2d", "LoRACompatibleConv", "Conv1d", "Conv3d"} | module_classes("conv")
QKV_NAMES = {"to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj", "add_q_proj", "add_k_proj", "add_v_proj", "q", "k",
             "v"}
OUT_NAMES = {"to_out.0", "out_proj", "to_add_out", "SelfAttention.o"}


# functions that apply rotary embeddings inside attention: every op they run is ``rope`` (module prefix, name)
ROPE_FUNCTIONS = (("diffusers.", "apply_rotary_emb"), *sorted(module_classes("rope_function")))


def is_attention(module) -> bool:
    """Whether ``module`` is an attention layer (of any family)."""
    return type(module).__name__ in ATTENTION_MODULES


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
    if processor in LINEAR_ATTN_PROCESSORS or type(module).__name__ in LINEAR_ATTENTION_MODULES:
        return "linear"
    if getattr(module, "add_q_proj", None) is not None or ".single_transformer_blocks." in path:
        return "joint"
    return "cross" if getattr(module, "is_cross_attention", False) else "self"

