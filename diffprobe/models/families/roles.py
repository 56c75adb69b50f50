"""Which modules are what: a module's role (attention, feed-forward, norm, modulation, RoPE, ...) from its class,
over the shared vocabulary of diffusers' building blocks and text encoders plus what each family declares for its
own layers (``Family.modules``). Module classes are recognized by name, so the tracer attributes every op without
importing the model code; this is the one place outside a family's module where a class name is read."""

from __future__ import annotations

import torch

from diffprobe.models.families import module_classes

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
MOE_MODULES = set(module_classes("moe"))  # mixture-of-experts feed-forwards (their own ops: dispatch)
MOE_ROUTERS = set(module_classes("moe_router"))  # their gates
ROPE_MODULES = set(module_classes("rope"))  # rotary position tables (their application: ROPE_FUNCTIONS)
LINEAR_ATTN_PROCESSORS = set(module_classes("linear_attention_processor"))
LINEAR_ATTENTION_MODULES = set(module_classes("linear_attention"))  # attention modules that are linear attention
LINEAR_MODULES = {"Linear", "LoRACompatibleLinear"} | module_classes("linear")
CONV_MODULES = {"Conv2d", "LoRACompatibleConv", "Conv1d", "Conv3d"} | module_classes("conv")
# functions that apply rotary embeddings inside attention: every op they run is ``rope`` (module prefix, name)
ROPE_FUNCTIONS = (("diffusers.", "apply_rotary_emb"), *sorted(module_classes("rope_function")))


def is_attention(module) -> bool:
    """Whether ``module`` is an attention layer (of any family)."""
    return type(module).__name__ in ATTENTION_MODULES


def module_role(module) -> str:
    name = type(module).__name__
    if name in MOE_MODULES:
        return "moe"
    if name in MOE_ROUTERS:
        return "moe_router"
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


def role_of(path: str, module, path_roles: dict) -> str:
    """A module's role: its family's ``path_roles`` by its attribute name (or ``container.*`` for the children of a
    container so named), else its class's (:func:`module_role`)."""
    parts = path.split(".")
    return (path_roles.get(parts[-1]) or (len(parts) > 1 and path_roles.get(parts[-2] + ".*"))
            or module_role(module))


def is_conditioning(module) -> bool:
    """Whether the module's outputs condition the blocks on the timestep (every op that reads them is modulation)."""
    return type(module).__name__ in CONDITIONING_MODULES


def attention_kind(module, path: str, joint_paths: tuple[str, ...] = (), cross_paths: tuple[str, ...] = ()) -> str:
    """``self``, ``cross``, ``joint`` (text and image tokens in one sequence: SD3's two streams, or a single stream
    at ``joint_paths``, the family's: Flux's single-stream blocks, Z-Image's main layers) or ``linear`` (Sana's ReLU
    linear attention) for an attention module; ``cross`` where the module says so, or its path ends with one of the
    family's ``cross_paths`` (LTX-Video's ``attn2``, whose class does not say)."""
    processor = type(getattr(module, "processor", None)).__name__
    if processor in LINEAR_ATTN_PROCESSORS or type(module).__name__ in LINEAR_ATTENTION_MODULES:
        return "linear"
    if getattr(module, "add_q_proj", None) is not None or any(p in path for p in joint_paths):
        return "joint"
    cross = getattr(module, "is_cross_attention", False) or path.endswith(cross_paths)
    return "cross" if cross else "self"

