"""The approximate attention methods, one class each, in one registry (``@register``, as the formula registry).

A method has one parameter (its name, domain and no-op value: at the no-op value the core runs dense SDPA) and a keep
rule: per chunk of query rows, from the exact scores, which entries are computed, and what its predictor costs in
FLOPs. :class:`~diffprobe.attention.approx.ApproxAttention` runs whichever method it is given; the command line's
options and help come from here (this module loads without torch). A new method is one class in this file and a
test.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from diffprobe.errors import DiffprobeError

if TYPE_CHECKING:  # torch is imported where a method runs: the CLI builds its options from here without it
    import torch


class ParameterError(DiffprobeError):
    """A method's parameter outside its domain: names the method, its parameter and the value, not a flag (the CLI
    maps the parameter to its option)."""

    def __init__(self, method: str, param: str, value: float, rule: str):
        self.method, self.param, self.value, self.rule = method, param, value, rule
        super().__init__(f"{method}: {param} {value:g} {rule}")


class AttentionMethod:
    """One approximate attention method (see the subclasses)."""

    name = ""
    param = ""  # its parameter's name
    noop = 0.0  # the parameter's value at which the method is dense
    rule = ""  # the domain, as a phrase: "is outside [0, 1)"
    domain = "[0, 1)"  # its parameter's values
    param_help = ""  # what the parameter does (the CLI's help)
    default = ""  # the values ``diffprobe approx`` tries by default (comma list)
    integer = False  # a whole-number parameter
    keeps_largest = False  # every row keeps at least its largest entry
    blocked = False  # decides per (query block x key block) tile

    def valid(self, value: float) -> bool:
        return 0 <= value < 1

    def check(self, value: float) -> float:
        """``value`` if it is in the method's domain, else a :class:`ParameterError`."""
        if not self.valid(value):
            raise ParameterError(self.name, self.param, value, self.rule)
        return value

    def is_noop(self, value: float, n_keys: int) -> bool:
        return value == self.noop

    def prepare(self, core, q: torch.Tensor, k: torch.Tensor) -> tuple[object, int]:
        """What the keep rule needs for a whole call, computed once, and its FLOPs."""
        return None, 0

    def keep(self, core, state, s: torch.Tensor, qc: torch.Tensor, first_row: int) -> tuple[torch.Tensor, int]:
        """The kept entries of a chunk of query rows ``qc`` (scores ``s``: (B, H, rows, keys), starting at query
        ``first_row``) and the FLOPs the rule spent deciding."""
        raise NotImplementedError


METHOD_REGISTRY: dict[str, AttentionMethod] = {}


def register(cls: type[AttentionMethod]) -> type[AttentionMethod]:
    """Add a method (one instance of ``cls``) to the registry under its ``name``."""
    METHOD_REGISTRY[cls.name] = cls()
    return cls


def attention_method(name: str) -> AttentionMethod:
    try:
        return METHOD_REGISTRY[name]
    except KeyError:
        raise DiffprobeError(f"unknown method {name!r}; use one of {', '.join(METHOD_REGISTRY)}") from None


@register
class Threshold(AttentionMethod):
    """Oracle: all scores and probabilities computed, probabilities < ε dropped before P·V."""

    name, param, noop, rule = "threshold", "eps", 0.0, "is outside [0, 1)"
    param_help = "probabilities below eps dropped"
    default = "0,1e-3,1e-2"
    keeps_largest = True

    def keep(self, core, state, s, qc, first_row):
        return s.softmax(dim=-1) >= core.value, 0


@register
class TopK(AttentionMethod):
    """Oracle: the k largest scores of each row kept."""

    name, param, noop, rule = "topk", "k", math.inf, "must be at least 1"
    param_help = "keys kept per query"
    domain, default = ">= 1", "64,16,4"
    integer = True

    def valid(self, value):
        return value >= 1

    def is_noop(self, value, n_keys):
        return value >= n_keys

    def keep(self, core, state, s, qc, first_row):
        import torch

        kk = int(min(core.value, s.shape[-1]))
        return torch.zeros_like(s, dtype=torch.bool).scatter_(-1, s.topk(kk, dim=-1).indices, True), 0


@register
class Predicted(AttentionMethod):
    """A rank-r random projection of Q and K estimates the probabilities; entries estimated ≥ ε are computed."""

    name, param, noop, rule = "predicted", "eps", 0.0, "is outside [0, 1)"
    param_help = "entries whose estimated probability is below eps not computed"
    default = Threshold.default
    keeps_largest = True

    def prepare(self, core, q, k):
        import torch

        b, h, nk, d = k.shape
        g = torch.Generator(device="cpu").manual_seed(core.seed)
        proj = (torch.randn(d, core.rank, generator=g) / math.sqrt(core.rank)).to(q.device)
        kt_est = (k.float() @ proj).transpose(-1, -2)
        return (proj, kt_est), 2 * b * h * nk * d * core.rank

    def keep(self, core, state, s, qc, first_row):
        proj, kt_est = state
        b, h, rows, nk = s.shape
        est = ((qc @ proj) @ kt_est * (1.0 / math.sqrt(qc.shape[-1]))).softmax(dim=-1)
        return est >= core.value, 2 * b * h * rows * nk * core.rank + 5 * b * h * rows * nk


@register
class Block(AttentionMethod):
    """Q and K mean-pooled per block of b tokens; per query block, key blocks by descending pooled mass until τ is
    covered; attention on the kept blocks only (the layout a block-sparse kernel runs)."""

    name, param, noop, rule = "block", "tau", 1.0, "is outside (0, 1]"
    param_help = "mass covered by the kept key blocks"
    domain, default = "(0, 1]", "1,0.99,0.95,0.9"
    blocked = True

    def valid(self, value):
        return 0 < value <= 1

    def prepare(self, core, q, k):
        index, predictor = core.block_index(q, k)
        return index[0], predictor

    def keep(self, core, state, s, qc, first_row):
        bs, rows, nk = core.block, s.shape[2], s.shape[3]
        block_keep = state[:, :, first_row // bs:-(-(first_row + rows) // bs)]  # chunks start on a block
        keep = block_keep.repeat_interleave(bs, dim=-2)[:, :, :rows]
        return keep.repeat_interleave(bs, dim=-1)[..., :nk], 0
