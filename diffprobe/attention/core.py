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
from diffprobe.models.families import Family, family_of
from diffprobe.models.families.levels import unet_level
from diffprobe.models.registry import denoiser
from diffprobe.records.sdpa import SdpaIntercept, bound, is_plain

Core = Callable[..., torch.Tensor]  # (q, k, v, attn_mask, call) -> out, all (B, H, N, d)


class CallInfo:
    """What a core knows about the call it serves: module name (relative to the denoiser), self/cross/joint, token
    counts, heads, the denoising step (denoiser evaluation) of the run it is part of, its level, and for joint
    attention where the text keys sit (``text_keys``: a slice of the key axis; methods keep them dense); ``call``:
    which denoiser call of its step (1: the second, where CFG's branches are two calls, Qwen-Image's)."""

    __slots__ = ("name", "kind", "q_tokens", "k_tokens", "heads", "step", "level", "text_keys", "call")

    def __init__(self, name: str, kind: str, q_tokens: int, k_tokens: int, heads: int, step: int = -1,
                 level: str = "", text_keys: slice | None = None, call: int = 0):
        self.name, self.kind, self.q_tokens, self.k_tokens, self.heads = name, kind, q_tokens, k_tokens, heads
        self.step, self.level, self.text_keys, self.call = step, level, text_keys, call


class RunContext:
    """Where the run is: ``step`` is the index of the current UNet evaluation (the denoising step, counted from
    0 as the op records count it), advanced by a forward pre-hook on the UNet; ``call``, which denoiser call of the
    step this is. Where a family runs CFG's branches as two calls per step, the scheduler's steps advance ``step``
    (:meth:`stepped`) and each denoiser call ``call`` (:meth:`called`)."""

    def __init__(self):
        self.step, self.call = -1, 0
        self._by_scheduler = False

    def advance(self, *_) -> None:
        if self._by_scheduler:
            self.called()
        else:
            self.step += 1

    def by_scheduler(self) -> None:
        """Count steps by the scheduler from now: the first denoiser call is step 0, call 0."""
        self._by_scheduler, self.step, self.call = True, 0, -1

    def called(self) -> None:
        self.call += 1

    def stepped(self) -> None:
        self.step, self.call = self.step + 1, -1


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
    out = core(q, k, v, attention_mask, CallInfo(name, kind, q.shape[2], k.shape[2], attn.heads, step,
                                                 unet_level(f"unet.{name}")))
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
def installed(unet, core: Core, family: Family | None = None):
    """Every attention layer of the denoiser ``unet`` runs ``core`` inside the block, its calls told the denoising
    step (the :class:`RunContext` yielded, counted from 0 at the first denoiser evaluation inside the block); the
    original processors come back after. A UNet gets diffprobe's processor; a diffusion transformer keeps its own
    processors (joint attention, RoPE and qk-norm as the model applies them) and ``core`` replaces the attention
    call they make (:func:`installed_dit`; ``family``, the model's, says where joint attention's text keys sit)."""
    if family is None and not hasattr(unet, "down_blocks"):
        raise DiffprobeError("internal: a diffusion transformer's attention needs its family (where text keys sit)")
    if family is not None and family.denoiser_kind == "transformer":
        with installed_dit(unet, core, family) as context:
            yield context
        return
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


@contextlib.contextmanager
def installed_in(pipe, core: Core):
    """:func:`installed` on the pipeline's denoiser, with its family; where the family runs CFG's branches as two
    denoiser calls per step, the steps its calls are told are the scheduler's (each call numbered within its step)."""
    family = family_of(pipe)
    with installed(denoiser(pipe), core, family) as context:
        if not family.cfg_calls:
            yield context
            return
        from diffprobe.patching import patch_attr

        step = pipe.scheduler.step

        def counted(*args, **kwargs):
            try:
                return step(*args, **kwargs)
            finally:
                context.stepped()

        context.by_scheduler()
        undo = patch_attr(pipe.scheduler, "step", counted)
        try:
            yield context
        finally:
            undo()


def _pop(stack: list) -> None:
    """Leave an attention module (a forward hook: returns None, so the module's output stays its own)."""
    stack.pop()


@contextlib.contextmanager
def installed_dit(transformer, core: Core, family: Family):
    """``core`` serves every softmax-attention call inside the attention modules of a diffusion transformer.

    The processors run unchanged (diffusers' ``dispatch_attention_fn`` and the joint processors end in
    ``F.scaled_dot_product_attention``): that call, made inside an attention module, is given to ``core`` with
    the module's name, kind and level, after the model's own RoPE and qk norms. Joint attention (SD3, Flux) tells
    ``core`` where the text keys are: SD3 appends them after the image keys, Flux puts them first; how many there
    are, the family says from the denoiser call (:meth:`Family.text_tokens`). Sana's linear attention makes no such
    call and stays as it is."""
    from diffprobe.models.families.roles import attention_kind, is_attention

    context = RunContext()
    stack: list[tuple[str, str, str]] = []
    text = {"tokens": 0}
    hooks = []

    def on_denoiser(_module, args, kwargs):
        context.advance()
        text["tokens"] = family.text_tokens(args, kwargs)

    hooks.append(transformer.register_forward_pre_hook(on_denoiser, with_kwargs=True))
    n_modules = 0
    for name, module in transformer.named_modules():
        if not is_attention(module):
            continue
        n_modules += 1
        kind = attention_kind(module, f"transformer.{name}", family.joint_paths, family.cross_paths)
        entry = (name, kind, family.level(f"transformer.{name}"), family.text_keys)
        hooks.append(module.register_forward_pre_hook(lambda *_, e=entry: stack.append(e)))
        hooks.append(module.register_forward_hook(lambda *_: _pop(stack), always_call=True))
    if not n_modules:
        raise DiffprobeError("this model has no attention layers to probe or approximate")

    def sdpa(func, args, kwargs):
        call = bound(args, kwargs)
        if not stack or not is_plain(call):
            return func(*args, **kwargs)
        q, k = call["query"], call["key"]
        name, kind, level, where = stack[-1]
        nk, nt = k.shape[2], text["tokens"]
        text_keys = None
        if kind == "joint" and 0 < nt < nk:
            text_keys = slice(0, nt) if where == "start" else slice(nk - nt, nk)
        return core(q, k, call["value"], call.get("attn_mask"),
                    CallInfo(name, kind, q.shape[2], nk, q.shape[1], context.step, level, text_keys,
                             max(0, context.call)))

    try:
        with SdpaIntercept(sdpa):  # the core's own SDPA calls pass (the mode is off inside its handler)
            yield context
    finally:
        for h in hooks:
            h.remove()
