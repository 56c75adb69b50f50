"""The one record schema: a row per executed operator, shared by the tracer, every analysis and the report.

:class:`OpRecord` builds every row (the tracer makes one per op; replays and timers derive new ones with
``_replace``), :data:`OPS_ARROW` is the same schema as stored in ``ops.parquet``. Units live in the field names.
Every document of a run folder has its own version (:data:`VERSIONS`), stored with it and checked by every reader.
"""

from __future__ import annotations

from typing import NamedTuple, get_type_hints

import pyarrow as pa

from diffprobe.errors import DiffprobeError

OPS_VERSION = 4  # 2: start_s added; 3: shapes as list columns; 4: stage "denoiser" (was "unet"), DiT layer types
SCHEMA_VERSION = 4  # the JSON documents (run.json, sweep.json, ...); 3: stage and sweep keys "denoiser" (was "unet");
# 4: every "unet_*" key "denoiser_*"; fractions saved "*_share_saved", absolute FLOPs saved "*_flops_saved"
VERSIONS = {"ops": OPS_VERSION, "profile": SCHEMA_VERSION, "sweep": SCHEMA_VERSION, "compare": SCHEMA_VERSION,
            "sparsity": SCHEMA_VERSION, "approx": SCHEMA_VERSION, "accel": SCHEMA_VERSION}

# Layer types used in every table. The first thirteen are the study's; ``linear`` (dense layers outside attention
# and feed-forward, e.g. SD 2's proj_in/proj_out, ResNet time projections), ``memory`` (copies, concatenation,
# dtype casts), ``view`` (zero-cost reshapes) and ``transfer`` (copies between devices) keep the account complete
# without hiding work in ``other``. Diffusion transformers add ``modulation`` (adaLN: the timestep-conditioned
# shift, scale and gate), ``rope`` (rotary embeddings: tables and their application), ``patchify`` (patch
# embedding and unpatchify) and the two products of linear attention (``linattn_kv``: the kv summary Vᵀ·K,
# ``linattn_q``: its product with Q). Mixture-of-experts feed-forwards (HiDream) add ``moe_router`` (the gate:
# linear, softmax, top-k), ``moe_shared`` and ``moe_expert`` (the shared and the routed experts' linears) and
# ``moe_dispatch`` (sorting tokens to experts, gathering, weighting, scattering back). docs/counting.md says what
# each holds.
LAYER_TYPES = (
    "conv", "attn_qkv", "attn_score", "attn_softmax", "attn_pv", "attn_out", "ffn", "norm", "activation",
    "elementwise", "embedding", "resample", "other", "linear", "memory", "view", "transfer",
    "modulation", "rope", "patchify", "linattn_kv", "linattn_q",
    "moe_router", "moe_shared", "moe_expert", "moe_dispatch",
)
DENOISER = "denoiser"  # the stage of the UNet or diffusion transformer, whatever the model
STAGES = ("text_encoder", "text_encoder_2", "text_encoder_3", "text_encoder_4", DENOISER, "scheduler", "vae_decoder",
          "vae_encoder", "pipeline")


Shapes = list  # list[list[int]]: one shape per tensor


class OpRecord(NamedTuple):
    """One executed operator (or one part of a fused attention kernel, see ``part``)."""

    index: int  # execution order within the run
    op: str  # ATen overload, e.g. "aten.convolution.default"; fused attention: "sdpa"
    part: str  # "" or, for a fused attention kernel split in the account: "score" / "softmax" / "pv"
    stage: str  # one of STAGES
    step: int  # denoising step (UNet evaluation index); -1 outside the loop
    module: str  # innermost module path, e.g. "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    level: str  # UNet level: "top", "in", "embed", "down.0".., "mid", "up.0"..; "out"; VAE: "dec.*"; else ""
    tokens: int  # latent tokens at that UNet level (h*w); 0 elsewhere
    layer_type: str  # one of LAYER_TYPES
    attn_kind: str  # "self" / "cross" / "joint" (text+image sequence) / "linear" for attention rows, else ""
    cfg: str  # "batched" when classifier-free guidance runs both branches in one batch; "cond" / "uncond" when
    # they are separate calls (Qwen-Image); else ""
    input_shapes: Shapes  # one shape per input tensor, e.g. [[2, 4, 64, 64], [320, 4, 3, 3]]
    output_shapes: Shapes  # one shape per output tensor
    dtype: str  # dtype of the first tensor input (or output)
    flops: int  # floating-point operations (multiply-add = 2)
    macs_conv_linear: int  # multiply-adds of nn.Conv / nn.Linear products only (the literature convention)
    bytes_read: int  # minimum traffic as executed (each input read once)
    bytes_written: int  # minimum traffic as executed (each output written once)
    bytes_read_unfused: int  # same, if a fused kernel's intermediates (attention scores) went through memory
    bytes_written_unfused: int
    time_s: float  # measured wall time (NaN in analytic mode)
    start_s: float  # when the op started, seconds from the start of the traced call (NaN in analytic mode)
    time_apportioned: bool  # True where one fused kernel's time is split over its parts in proportion to FLOPs
    replayed: bool  # True for UNet evaluations copied from an identical traced one instead of re-traced


COLUMNS = OpRecord._fields
_ARROW_TYPES = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
                list: pa.list_(pa.list_(pa.int64()))}  # list: Shapes
OPS_ARROW = pa.schema([(name, _ARROW_TYPES[hint]) for name, hint in get_type_hints(OpRecord).items()])


INT64_MAX = 2**63 - 1


COUNT_GROUPS = {"FLOPs": ("flops",), "bytes": ("bytes_read", "bytes_written"),
                 "unfused bytes": ("bytes_read_unfused", "bytes_written_unfused")}


def check_int64_totals(rows: list[OpRecord], replays: list[tuple[int, int, int, int]] = ()) -> None:
    """Refuse a run whose exact totals do not fit the record table's 64-bit integer columns.

    Counts are exact Python integers while traced; the table stores them as int64. When a run's grand total of
    FLOPs (or of bytes read + written) fits, every per-op value and every partial sum of these non-negative
    columns fits too, so the totals of every analysis stay exact. ``replays``: blocks of ``rows`` that recur
    (``(at, first, n, step)``, see :meth:`~diffprobe.records.tracer.OpTracer.replay`), counted again each time."""

    for what, cols in COUNT_GROUPS.items():
        per_row = [sum(getattr(r, c) for c in cols) for r in rows]
        prefix = [0]
        for v in per_row:
            prefix.append(prefix[-1] + v)
        total = prefix[-1] + sum(prefix[first + n] - prefix[first] for _, first, n, _ in replays)
        if total > INT64_MAX:
            raise DiffprobeError(f"this run's {what} ({total:.3e}) exceed the 64-bit integers the record table "
                                 f"stores exactly (at most {INT64_MAX:.3e}); use a smaller --height/--width, "
                                 "--batch or --steps")
