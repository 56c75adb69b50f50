"""The sparsity probe: statistics of every denoiser attention call's probabilities, per layer × head × step.

The probe is an attention core (see :mod:`diffprobe.attention.core`) that returns exactly the dense SDPA output,
so the run and its image are unchanged, and on the side recomputes the probabilities in query chunks
(:mod:`diffprobe.attention.stats`) to accumulate their statistics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch.nn.functional as F

from diffprobe.attention.core import CallInfo
from diffprobe.attention.stats import HeadStats, probabilities_in_chunks
from diffprobe.errors import DiffprobeError
from diffprobe.parsing import parse_floats  # noqa: F401  (imported from here too)

RANDOM_NOTE = ("random weights: attention on untrained weights is near-uniform, so these sparsity figures say "
               "nothing about a trained model; use --model digits or --weights")


@dataclass
class SparsityConfig:
    eps: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    taus: tuple[float, ...] = (0.9, 0.95, 0.99)
    blocks: tuple[int, ...] = (32, 64, 128)
    max_elements: int = 2**22
    save_masks: bool = False  # keep every call's block masks and per-row kept keys (the mask store's content)

    def validate(self) -> "SparsityConfig":
        if any(b <= 0 for b in self.blocks):
            raise DiffprobeError("--blocks values must be positive block sides (tokens)")
        if any(not (0 <= e < 1) for e in self.eps):
            raise DiffprobeError("--eps values must be in [0, 1)")
        if any(not (0 < t <= 1) for t in self.taus):
            raise DiffprobeError("--tau values must be in (0, 1]")
        return self


class SparsityProbe:
    """An attention core: dense output, statistics on the side; ``rows`` holds one dict per layer×head×call."""

    def __init__(self, sc: SparsityConfig):
        self.sc = sc
        self.rows: list[dict] = []
        self.calls: Counter[str] = Counter()
        self.masks: list[dict] = []  # save_masks: one entry per call (see diffprobe.records.masks)

    def core(self, q, k, v, attn_mask, call: CallInfo):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        stats = HeadStats(call.heads, call.k_tokens, self.sc.eps, self.sc.taus, self.sc.blocks,
                          keep_masks=self.sc.save_masks)
        for p in probabilities_in_chunks(q, k, self.sc.blocks, attn_mask, self.sc.max_elements):
            stats.add(p)
        step = call.step
        if self.sc.save_masks:
            blocks, rows = stats.masks()
            self.masks.append({"layer": call.name, "step": step, "attn_kind": call.kind, "q_tokens": call.q_tokens,
                               "k_tokens": call.k_tokens, "blocks": blocks, "rows": rows})
        self.calls[call.name] += 1
        level = call.level
        for row in stats.result():
            self.rows.append({"layer": call.name, "level": level, "attn_kind": call.kind, "step": step,
                              "q_tokens": call.q_tokens, "k_tokens": call.k_tokens, **row})
        return out
