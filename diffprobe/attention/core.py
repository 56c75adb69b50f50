"""The one attention forward every diffprobe processor shares: projections and head reshapes around a core.

diffusers attention processors all repeat the same steps (norms, Q/K/V projections, head split, the core,
head merge, output projection, residual). Here they are written once; a processor only supplies the core
``(q, k, v, mask) -> out`` on tensors of shape (batch, heads, tokens, head_dim). Processors are installed with
diffusers' own ``set_attn_processor`` inside :func:`installed`, which restores the originals on exit.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from diffprobe.errors import DiffprobeError

Core = Callable[..., torch.Tensor]  # (q, k, v, attn_mask, call) -> out, all (B, H, N, d)


class CallInfo:
    """What a core knows about the call it serves: module name, self/cross, token counts, heads and the denoising
    step (UNet evaluation) of the run it is part of."""

    __slots__ = ("name", "kind", "q_tokens", "k_tokens", "heads", "step")

    def __init__(self, name: str, kind: str, q_tokens: int, k_tokens: int, heads: int, step: int = -1):
        self.name, self.kind, self.q_tokens, self.k_tokens, self.heads = name, kind, q_tokens, k_tokens, heads
        self.step = step


class RunContext:
    """Where the run is: ``step`` is the index of the current UNet evaluation (the denoising step, counted from
    0 as the op records count it), advanced by a forward pre-hook on the UNet."""

    def __init__(self):
        self.step = -1

    def advance(self, *_) -> None:
        self.step += 1


def attention_forward(attn, hidden_states, encoder_hidden_states, attention_mask, temb, core: Core, name: str,
                      context: RunContext | None = None):
    """diffusers ``AttnProcessor2_0`` with its ``scaled_dot_product_attention`` replaced by ``core``."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    batch, seq_len, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
        attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    kind = "cross" if encoder_hidden_states is not None else "self"
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    value = attn.to_v(encoder_hidden_states)
    head_dim = key.shape[-1] // attn.heads
    q = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Nq, d)
    k = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Nk, d)
    v = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Nk, d)
    if getattr(attn, "norm_q", None) is not None:
        q = attn.norm_q(q)
    if getattr(attn, "norm_k", None) is not None:
        k = attn.norm_k(k)
    step = context.step if context is not None else -1
    out = core(q, k, v, attention_mask, CallInfo(name, kind, q.shape[2], k.shape[2], attn.heads, step))
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(q.dtype)
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(b, c, h, w)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class CoreProcessor:
    """A diffusers attention processor running ``core`` for the module called ``name``."""

    def __init__(self, core: Core, name: str, context: RunContext | None = None):
        self.core, self.name, self.context = core, name, context

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        return attention_forward(attn, hidden_states, encoder_hidden_states, attention_mask, temb, self.core,
                                 self.name, self.context)


@contextlib.contextmanager
def installed(unet, core: Core):
    """Every attention layer of ``unet`` runs ``core`` inside the block, its calls told the denoising step (the
    :class:`RunContext` yielded, counted from 0 at the first UNet evaluation inside the block); the original
    processors come back after."""
    original = dict(unet.attn_processors)
    if not original:
        raise DiffprobeError("this model has no attention layers to probe or approximate")
    context = RunContext()
    hook = unet.register_forward_pre_hook(context.advance)
    unet.set_attn_processor({name: CoreProcessor(core, name.removesuffix(".processor"), context)
                             for name in original})
    try:
        yield context
    finally:
        hook.remove()
        unet.set_attn_processor(original)
