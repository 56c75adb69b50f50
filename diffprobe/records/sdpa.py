"""The one place diffprobe intercepts ``F.scaled_dot_product_attention``.

Every softmax attention of the embedded models ends in that call (diffusers' ``AttnProcessor2_0``, its joint
processors and ``dispatch_attention_fn``). :class:`SdpaIntercept` is a ``TorchFunctionMode`` that hands each such call
to a handler, whoever made it and however it names the function; other torch functions pass through. The tracer
counts the call with it (one record per attention part) and the attention cores of a diffusion transformer replace
it with it. Inside a handler the mode is off, so what the handler calls (the real SDPA, or a core's own kernels)
reaches the modes entered before it (a tracer outside a core sees what the core runs) and never the handler again.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

SDPA = F.scaled_dot_product_attention  # the torch function itself
ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")

Handler = Callable[..., object]  # (func, args, kwargs) -> output


def bound(args, kwargs) -> dict:
    """An SDPA call's arguments by name."""
    out = dict(zip(ARGS, args, strict=False))
    out.update(kwargs)
    return out


def positional(args, kwargs) -> tuple[tuple, dict]:
    """An SDPA call's arguments with query, key and value positional (``dispatch_attention_fn`` passes them by
    keyword)."""
    if len(args) >= 3 or not any(k in kwargs for k in ARGS[:3]):
        return args, kwargs
    kwargs = dict(kwargs)
    args = tuple(args) + tuple(kwargs.pop(k) for k in ARGS[len(args):3])
    return args, kwargs


def is_plain(call: dict) -> bool:
    """No dropout, no causal mask, no grouped-query heads and the default scale: softmax(QKᵀ/√d)·V, as the cost
    account and the attention cores compute it."""
    q = call.get("query")
    return (call.get("dropout_p", 0.0) == 0.0 and not call.get("is_causal", False) and not call.get("enable_gqa", False)
            and call.get("scale") in (None, q.shape[-1] ** -0.5))


class InterruptSafeExit:
    """A torch mode whose exit lets an interrupt through: a signal (SIGTERM, Ctrl-C) that lands inside torch's own
    pop-and-push of its mode stack leaves the stack one mode short, and leaving the mode then raises "trying to pop
    from empty mode stack" over the interrupt (a run exited 1 with a traceback instead of 143). With an exception
    already propagating, that error is dropped; without one it still surfaces."""

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            return super().__exit__(exc_type, exc_value, traceback)
        except RuntimeError:
            if exc_type is None:
                raise
            return None


class SdpaIntercept(InterruptSafeExit, TorchFunctionMode):
    """While entered, every ``F.scaled_dot_product_attention`` call goes to ``handler(func, args, kwargs)``."""

    def __init__(self, handler: Handler):
        super().__init__()
        self.handler = handler

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is SDPA:
            return self.handler(func, args, kwargs)
        return func(*args, **kwargs)


def meta_output(q, k, v):
    """A meta SDPA output laid out as the CPU flash kernel lays its own out: like the query, (B, N, H, dv) in memory
    when the query is a (B, N, H, d) tensor seen as (B, H, N, d) (the diffusers processors' view), else contiguous.
    Meta's own math fallback returns another layout, which would change later copies."""
    *batch, heads, n, _ = q.shape
    if q.dim() == 4 and q.stride(1) < q.stride(2):
        out = torch.empty((*batch, n, heads, v.shape[-1]), dtype=q.dtype, device="meta")
        return out.transpose(-3, -2)
    return torch.empty((*batch, heads, n, v.shape[-1]), dtype=q.dtype, device="meta")
