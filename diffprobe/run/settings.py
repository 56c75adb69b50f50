"""``--approx`` settings: one attention approximation, one step-level reuse method, or both joined with ``+``
(``block=0.25+deepcache=3``), measured together against the same dense run."""

from __future__ import annotations

from typing import NamedTuple

from diffprobe.attention.approx import METHODS, parse_setting
from diffprobe.errors import DiffprobeError
from diffprobe.methods.registry import REUSE, make
from diffprobe.methods.reuse import ReuseMethod


class Setting(NamedTuple):
    text: str  # as given, normalized: "block=0.25+deepcache=3"
    attention: tuple[str, float] | None  # (method, value) of the attention approximation
    reuse: ReuseMethod | None


def parse_settings(text: str) -> Setting:
    """A setting from ``METHOD=VALUE[+METHOD=VALUE]``; unknown methods, bad values and two methods of one kind are
    refused with one line."""
    attention, reuse, parts = None, None, []
    for part in (p.strip() for p in text.split("+")):
        method, sep, value = part.partition("=")
        method = method.strip()
        if not sep:
            raise DiffprobeError(f"setting {text!r}: use METHOD=VALUE[+METHOD=VALUE], e.g. block=0.9+deepcache=3")
        if method in REUSE:
            if reuse is not None:
                raise DiffprobeError(f"setting {text!r}: one reuse method at a time")
            value, *opts = value.split(":")
            try:
                number = float(value)
            except ValueError:
                raise DiffprobeError(f"setting {text!r}: {value!r} is not a number") from None
            options = _options(text, REUSE[method], opts)
            reuse = make(method, number, **options)
            parts.append(f"{method}={number:g}" + "".join(f":{k}={v}" for k, v in options.items()))
        elif method in METHODS:
            if attention is not None:
                raise DiffprobeError(f"setting {text!r}: one attention method at a time")
            attention = parse_setting(part)
            parts.append(f"{attention[0]}={attention[1]:g}")
        else:
            raise DiffprobeError(f"unknown method {method!r}; use one of {', '.join((*METHODS, *REUSE))}")
    if attention is not None and reuse is not None and reuse.data_dependent:
        raise DiffprobeError(f"{reuse.name} decides from the activations which steps skip work: measure it alone "
                             "(beside an attention method its decisions would follow that method's outputs)")
    if attention is not None and reuse is not None and reuse.name == "tgate":
        raise DiffprobeError("tgate replaces every attention module's forward: it cannot run beside an attention "
                             "method; measure them apart")
    return Setting("+".join(parts), attention, reuse)


def _options(text: str, cls, opts: list[str]) -> dict:
    """A reuse method's ``:NAME=N`` options (whole numbers), checked against those it declares."""
    out = {}
    for opt in opts:
        name, sep, value = opt.partition("=")
        name = name.strip()
        if name not in cls.options:
            known = ", ".join(cls.options) or "none"
            raise DiffprobeError(f"setting {text!r}: {cls.name} has no option {name!r} (its options: {known})")
        try:
            out[name] = int(value)
        except ValueError:
            raise DiffprobeError(f"setting {text!r}: {name} {value!r} is not a whole number") from None
        if not sep:
            raise DiffprobeError(f"setting {text!r}: write options as :NAME=N, e.g. deepcache=3:branch=1")
    return out
