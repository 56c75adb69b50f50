"""The one record schema: a row per executed operator, shared by the tracer, every analysis and the report.

Units live in the field names. ``SCHEMA_VERSION`` is stored with every saved table.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

SCHEMA_VERSION = 2  # 2: start_s added

# Layer types used in every table. The first thirteen are the study's; ``linear`` (dense layers outside attention
# and feed-forward, e.g. SD 2's proj_in/proj_out, ResNet time projections), ``memory`` (copies, concatenation,
# dtype casts), ``view`` (zero-cost reshapes) and ``transfer`` (copies between devices) keep the account complete
# without hiding work in ``other``.
LAYER_TYPES = (
    "conv", "attn_qkv", "attn_score", "attn_softmax", "attn_pv", "attn_out", "ffn", "norm", "activation",
    "elementwise", "embedding", "resample", "other", "linear", "memory", "view", "transfer",
)
STAGES = ("text_encoder", "text_encoder_2", "unet", "scheduler", "vae_decoder", "vae_encoder", "pipeline")


@dataclass(frozen=True)
class OpRecord:
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
    attn_kind: str  # "self" / "cross" for attention rows, else ""
    cfg: str  # "batched" when classifier-free guidance runs both branches in one batch, else ""
    input_shapes: str  # JSON list of input tensor shapes
    output_shapes: str  # JSON list of output tensor shapes
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


COLUMNS = tuple(f.name for f in fields(OpRecord))
