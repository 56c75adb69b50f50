"""The step-level reuse settings by name (``--approx NAME=VALUE``)."""

from __future__ import annotations

import math

from diffprobe.errors import DiffprobeError
from diffprobe.methods.reuse import (
    DeepCache,
    FasterCache,
    FirstBlockCache,
    PyramidAttentionBroadcast,
    ReuseMethod,
    TaylorSeer,
    TGate,
)
from diffprobe.methods.teacache import TeaCache

REUSE = {"deepcache": DeepCache, "tgate": TGate, "first-block-cache": FirstBlockCache,
         "pab": PyramidAttentionBroadcast, "faster-cache": FasterCache, "taylorseer": TaylorSeer,
         "teacache": TeaCache}


def make(method: str, value: float, **options) -> ReuseMethod:
    if method not in REUSE:
        raise DiffprobeError(f"unknown reuse method {method!r}; use one of {', '.join(REUSE)}")
    if not math.isfinite(value):
        raise DiffprobeError(f"{method}: {value} is not a finite number")
    return REUSE[method](value, **options)
