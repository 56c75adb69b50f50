"""The tracer's view of a running pipeline: one frame per module on the call stack (stage, level, tokens, what kind
of layer it is part of), what is known about a module before it runs, and the layer type an op gets from its frame.
Also the light tensor descriptions (:class:`~diffprobe.records.formulas.TensorMeta`) the records are counted on."""

from __future__ import annotations

import torch

from diffprobe.records.formulas import TensorMeta

DTYPE_NAMES = {d: str(d).removeprefix("torch.") for d in (torch.float32, torch.float16, torch.bfloat16,
                                                           torch.float64, torch.int64, torch.int32, torch.bool)}


class AttnState:
    __slots__ = ("kind", "softmax_seen", "products")

    def __init__(self, kind: str):
        self.kind = kind
        self.softmax_seen = False
        self.products = 0  # attention products seen (linear attention: kv summary first, then the query product)


class Frame:
    __slots__ = ("path", "stage", "level", "tokens", "attn", "proj", "lit", "ffn", "act", "embed", "step", "mod",
                 "norm", "rope", "patch", "top", "moe")

    def __init__(self, path="", stage="pipeline", level="", tokens=0, attn=None, proj="", lit=False, ffn=False,
                 act=False, embed=False, step=-1, mod=False, norm=False, rope=False, patch=False, top=False, moe=""):
        self.path, self.stage, self.level, self.tokens = path, stage, level, tokens
        self.attn, self.proj, self.lit, self.ffn, self.act, self.embed, self.step = (
            attn, proj, lit, ffn, act, embed, step)
        self.mod, self.norm, self.rope, self.patch, self.top = mod, norm, rope, patch, top
        self.moe = moe  # inside a mixture of experts: "moe" (its dispatch), "moe_router", "moe_shared", "moe_expert"

    def copy(self, **changes) -> "Frame":
        f = Frame.__new__(Frame)
        for k in Frame.__slots__:
            setattr(f, k, changes.get(k, getattr(self, k)))
        return f


class Static:
    """What is known about a module before it runs."""

    __slots__ = ("path", "stage", "level", "tokens", "role", "proj", "attn_kind", "is_unet", "conditioning")

    def __init__(self, path, stage, level, tokens, role, proj, attn_kind, is_unet, conditioning=False):
        self.path, self.stage, self.level, self.tokens = path, stage, level, tokens
        self.role, self.proj, self.attn_kind, self.is_unet = role, proj, attn_kind, is_unet
        self.conditioning = conditioning


TENSOR = torch.Tensor


def tensor_meta(x):
    """``x`` with every tensor (in lists, tuples and dicts) replaced by its :class:`TensorMeta`."""
    if isinstance(x, TENSOR):
        dt = x.dtype
        return TensorMeta(tuple(x.shape), DTYPE_NAMES.get(dt) or str(dt).removeprefix("torch."), dt.itemsize)
    if isinstance(x, (list, tuple)):
        return [tensor_meta(i) for i in x] if type(x) is list else tuple(tensor_meta(i) for i in x)
    if isinstance(x, dict):
        return {k: tensor_meta(v) for k, v in x.items()}
    return x


def collect_metas(x, acc: list) -> list:
    """The TensorMetas in ``x`` (nested lists, tuples, dict values), in order."""
    if isinstance(x, TensorMeta):
        acc.append(x)
    elif isinstance(x, (list, tuple)):
        for i in x:
            collect_metas(i, acc)
    elif isinstance(x, dict):
        for i in x.values():
            collect_metas(i, acc)
    return acc


def shapes_of(metas) -> list[list[int]]:
    return [list(t.shape) for t in metas]


def op_layer_type(kind: str, f: "Frame") -> str:
    """The layer type of an op of ``kind`` (its formula's family) run inside frame ``f``."""
    if f.rope and kind != "view":
        return "rope"
    if f.patch and kind != "view":
        return "patchify"
    if f.moe and kind != "view":
        if f.moe == "moe_router":
            return "moe_router"  # the gate: its linear, softmax and top-k
        if f.moe == "moe":
            return "moe_dispatch"  # the block's own ops: sorting and counting tokens, gathers, weighting, scatters
        if kind == "matmul":
            return f.moe  # a shared or routed expert's linears (their activations as in a dense feed-forward)
    if kind == "conv":
        return "ffn" if f.ffn else "conv"  # Sana's Mix-FFN convolutions are its feed-forward
    if kind == "matmul":
        if f.attn is not None:
            if f.proj == "qkv":
                return "attn_qkv"
            if f.proj == "out":
                return "attn_out"
            if not f.lit:
                if f.attn.kind == "linear":  # V·Kᵀ (the kv summary) first, then its product with Q
                    f.attn.products += 1
                    return "linattn_kv" if f.attn.products == 1 else "linattn_q"
                return "attn_pv" if f.attn.softmax_seen else "attn_score"
        if f.embed:
            return "embedding"
        if f.mod:
            return "modulation"
        if f.ffn or f.proj == "mlp":
            return "ffn"
        return "linear"
    if kind == "softmax":
        if f.attn is not None:
            f.attn.softmax_seen = True
            return "attn_softmax"
        return "activation"
    if kind == "norm":
        return "norm"
    if kind == "view":
        return "view"
    if f.embed or kind == "embedding":
        return "embedding"
    if f.norm and kind in ("elementwise", "reduction", "memory", "activation"):
        return "norm"  # hand-written norms (T5, Gemma, qk RMSNorm): their casts, powers, means, rsqrt
    if f.mod and kind in ("elementwise", "reduction", "memory", "activation"):
        return "modulation"
    if kind == "activation" or (f.act and kind in ("elementwise", "memory")):
        return "activation"
    if kind == "resample":
        return "resample"
    if kind in ("elementwise", "reduction"):
        return "elementwise"
    if kind in ("memory", "create"):
        return "memory"
    return "other"
