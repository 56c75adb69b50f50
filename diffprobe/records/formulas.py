"""FLOP formulas: one registry of small shape-only functions, keyed by ATen operator name.

Each formula takes the op's arguments with every tensor replaced by a :class:`TensorMeta` (shape, dtype and
element size only) and its outputs likewise, and returns a :class:`Cost`. ``register`` refuses duplicates, so an
op is counted by exactly one formula. Conventions (docs/counting.md): a multiply-add is 2 FLOPs; exp, erf, sqrt
and division count 1 FLOP each; views and copies are 0 FLOPs; bytes default to "each input read once, each
output written once" and a formula may override them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


class TensorMeta:
    """What a formula may know about a tensor: its shape and element size."""

    __slots__ = ("shape", "dtype", "itemsize")

    def __init__(self, shape: tuple[int, ...], dtype: str, itemsize: int):
        self.shape = shape
        self.dtype = dtype
        self.itemsize = itemsize

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def __repr__(self) -> str:
        return f"T{list(self.shape)}:{self.dtype}"


@dataclass(frozen=True)
class Cost:
    flops: int = 0
    macs: int = 0  # multiply-adds of the core product (conv / matmul); 0 for everything else
    bytes_read: int | None = None  # None: default traffic model
    bytes_written: int | None = None


@dataclass(frozen=True)
class Formula:
    kind: str  # op class used for layer typing: conv, matmul, softmax, norm, activation, elementwise, ...
    fn: Callable[..., Cost]
    doc: str


FORMULAS: dict[str, Formula] = {}
KINDS = ("conv", "matmul", "softmax", "norm", "activation", "elementwise", "reduction", "resample", "embedding",
         "memory", "view", "create")


def register(kind: str, *ops: str):
    """Register ``fn`` as the formula of ``ops`` (ATen names without overload, e.g. ``"addmm"``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown op kind {kind!r}")

    def deco(fn: Callable[..., Cost]) -> Callable[..., Cost]:
        for op in ops:
            if op in FORMULAS:
                raise ValueError(f"formula for {op} registered twice")
            FORMULAS[op] = Formula(kind, fn, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
        return fn

    return deco


def lookup(op_name: str) -> Formula | None:
    """The formula of an ATen op (``aten.addmm.default`` or ``addmm``), or None."""
    base = op_name.split(".")[1] if op_name.startswith("aten.") else op_name.split(".")[0]
    return FORMULAS.get(base)


def _tensors(x) -> list[TensorMeta]:
    if isinstance(x, TensorMeta):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _tensors(item)]
    return []


def _out(out) -> TensorMeta:
    return _tensors(out)[0]


# -- products ---------------------------------------------------------------------------------------------------
@register("conv", "convolution", "_convolution", "conv2d", "conv1d", "conv3d")
def conv_flops(args, kwargs, out) -> Cost:
    """2 * out_elements * (C_in / groups) * prod(kernel), plus one add per output element for the bias."""
    x, w, bias = args[0], args[1], args[2] if len(args) > 2 else kwargs.get("bias")
    transposed = bool(args[6]) if len(args) > 6 else False
    kernel = math.prod(w.shape[2:])
    # w: (C_out, C_in/groups, kh, kw), so groups are already folded into w.shape[1]
    if transposed:  # each input element is scattered through C_out/groups * kernel weights
        macs = x.numel * w.shape[1] * kernel
    else:
        macs = _out(out).numel * w.shape[1] * kernel
    bias_flops = _out(out).numel if isinstance(bias, TensorMeta) else 0
    return Cost(2 * macs + bias_flops, macs)


@register("matmul", "einsum")
def einsum_flops(args, kwargs, out) -> Cost:
    """einsum: one multiply per operand pair for every combination of the distinct indices, plus one add when
    an index is summed (two operands with a contraction: 2 FLOPs per combination, as a matmul)."""
    equation, operands = args[0].replace(" ", ""), _tensors(args[1])
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    expanded = []
    for term, t in zip(terms, operands, strict=False):
        if "..." in term:  # the ellipsis stands for the dims not named: give them private index letters
            n = len(t.shape) - (len(term) - 3)
            term = term.replace("...", "".join(chr(0x100 + i) for i in range(n)))
        expanded.append(term)
        for letter, size in zip(term, t.shape, strict=False):
            sizes[letter] = max(sizes.get(letter, 1), size)
    if arrow:
        kept = set(rhs.replace("...", "")) | {c for c in "".join(expanded) if ord(c) >= 0x100}
    else:  # implicit output: the indices that appear once
        letters = "".join(expanded)
        kept = {c for c in letters if letters.count(c) == 1}
    combos = math.prod(sizes.values())
    contracted = bool(set(sizes) - kept)
    flops = combos * (max(1, len(operands) - 1) + (1 if contracted else 0))
    return Cost(flops, combos if contracted else 0)


@register("matmul", "mm")
def mm_flops(args, kwargs, out) -> Cost:
    """(m, k) @ (k, n): 2mkn."""
    a, b = args[0], args[1]
    macs = a.shape[0] * a.shape[1] * b.shape[1]
    return Cost(2 * macs, macs)


@register("matmul", "addmm")
def addmm_flops(args, kwargs, out) -> Cost:
    """bias + (m, k) @ (k, n): 2mkn + mn (beta/alpha != 1 add one multiply per output each)."""
    a, b = args[1], args[2]
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    extra = m * n * (1 + (kwargs.get("beta", 1) != 1) + (kwargs.get("alpha", 1) != 1))
    return Cost(2 * m * k * n + extra, m * k * n)


@register("matmul", "linear")
def linear_flops(args, kwargs, out) -> Cost:
    """x (..., k) @ W(n, k).T + b: 2 * rows * k * n, plus rows * n for the bias."""
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    rows = x.numel // x.shape[-1]
    macs = rows * x.shape[-1] * w.shape[0]
    return Cost(2 * macs + (rows * w.shape[0] if isinstance(bias, TensorMeta) else 0), macs)


@register("matmul", "matmul")
def matmul_flops(args, kwargs, out) -> Cost:
    """torch.matmul as dispatched whole (batched, broadcast): 2 * out_elements * k; a vector operand has k = its
    length."""
    a = args[0]
    k = a.shape[-1]
    macs = max(1, _out(out).numel) * k
    return Cost(2 * macs, macs)


@register("elementwise", "outer", "ger")
def outer_flops(args, kwargs, out) -> Cost:
    """Outer product of two vectors: one multiply per output element."""
    return Cost(_out(out).numel)


@register("matmul", "bmm")
def bmm_flops(args, kwargs, out) -> Cost:
    """(b, m, k) @ (b, k, n): 2bmkn."""
    a, b = args[0], args[1]
    macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return Cost(2 * macs, macs)


@register("matmul", "linalg_solve")
def solve_flops(args, kwargs, out) -> Cost:
    """A = LU, then forward and back substitution (n x n A, k right-hand sides, batched): 2/3 n^3 for the
    factorization and 2 n^2 per right-hand side (UniPC's corrector solves a system of its order at each step)."""
    a, b = args[0], args[1]
    n = a.shape[-1]
    batch = a.numel // (n * n)
    k = b.numel // (batch * n) if b.numel else 1
    flops = batch * (2 * n**3 // 3 + 2 * n * n * k)
    return Cost(flops, 0)


@register("matmul", "baddbmm")
def baddbmm_flops(args, kwargs, out) -> Cost:
    """beta * input + alpha * (b, m, k) @ (b, k, n): 2bmkn, + bmn for alpha != 1, + bmn (beta=1) or 2bmn."""
    a, b = args[1], args[2]
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    bmn = a.shape[0] * a.shape[1] * b.shape[2]
    macs = bmn * a.shape[2]
    flops = 2 * macs + (bmn if alpha != 1 else 0) + (0 if beta == 0 else bmn if beta == 1 else 2 * bmn)
    reads = (a.nbytes + b.nbytes) + (args[0].nbytes if beta != 0 else 0)  # beta=0: input is never read
    return Cost(flops, macs, bytes_read=reads)


def softmax_flops_per_element() -> int:
    """max-compare, subtract, exp, sum, divide."""
    return 5


def sdpa_parts(q: TensorMeta, k: TensorMeta, v: TensorMeta, has_mask: bool) -> dict[str, Cost]:
    """Scaled dot-product attention split into its three parts, counted the same on every backend.

    q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv) -> out (B, H, N, dv). The score part includes the 1/sqrt(d)
    scale (and the mask add); the causal mask of a text encoder is counted as a full matrix. Bytes "as executed"
    are those of a fused kernel (scores never leave the chip); the unfused figures go through
    :func:`sdpa_unfused_bytes`.
    """
    *batch, n, d = q.shape
    m, dv = k.shape[-2], v.shape[-1]
    bh = math.prod(batch)
    scores = bh * n * m
    out_bytes = bh * n * dv * q.itemsize
    return {
        "score": Cost(2 * scores * d + scores * (2 if has_mask else 1), 0, q.nbytes + k.nbytes, 0),
        "softmax": Cost(softmax_flops_per_element() * scores, 0, 0, 0),
        "pv": Cost(2 * scores * dv, 0, v.nbytes, out_bytes),
    }


def sdpa_unfused_bytes(q: TensorMeta, k: TensorMeta, v: TensorMeta) -> dict[str, tuple[int, int]]:
    """(read, written) per part if the score and probability matrices are materialized."""
    *batch, n, d = q.shape
    m, dv = k.shape[-2], v.shape[-1]
    s = math.prod(batch) * n * m * q.itemsize
    out_bytes = math.prod(batch) * n * dv * q.itemsize
    return {"score": (q.nbytes + k.nbytes, s), "softmax": (s, s), "pv": (s + v.nbytes, out_bytes)}


# -- normalization, softmax, activations --------------------------------------------------------------------------
@register("softmax", "_softmax", "softmax", "_log_softmax", "log_softmax", "_safe_softmax")
def softmax_flops(args, kwargs, out) -> Cost:
    """5 per element: max-compare, subtract, exp, sum, divide."""
    return Cost(softmax_flops_per_element() * args[0].numel)


@register("norm", "native_group_norm", "native_layer_norm", "group_norm", "layer_norm")
def norm_flops(args, kwargs, out) -> Cost:
    """Per element: mean 1, variance 3 (subtract, square, add), normalize 2, affine 2 (if weight/bias)."""
    x = args[0]
    # group norm: (input, weight, bias, ...); layer norm: (input, normalized_shape, weight, bias, ...)
    affine = 2 if any(isinstance(a, TensorMeta) for a in args[1:4]) else 0
    return Cost((6 + affine) * x.numel)


@register("norm", "rms_norm", "_fused_rms_norm")
def rms_norm_flops(args, kwargs, out) -> Cost:
    """Per element: square 1, mean 1, normalize 1 (the per-row rsqrt is negligible), scale 1 (if weight)."""
    x = args[0]
    weight = args[2] if len(args) > 2 else kwargs.get("weight")
    return Cost((3 + (1 if isinstance(weight, TensorMeta) else 0)) * x.numel)


def _per_element(n: int, doc: str):
    def fn(args, kwargs, out) -> Cost:
        return Cost(n * _out(out).numel)

    fn.__doc__ = doc
    return fn


register("activation", "silu", "silu_")(_per_element(5, "x / (1 + exp(-x)): 4 for the sigmoid, 1 multiply."))
register("activation", "sigmoid", "sigmoid_")(_per_element(4, "1 / (1 + exp(-x)): negate, exp, add, divide."))
register("activation", "gelu", "gelu_")(_per_element(5, "0.5 x (1 + erf(x / sqrt 2)); the tanh form counts 5 too."))
register("activation", "tanh", "relu", "relu_", "erf", "mish")(_per_element(1, "one special function per element."))

_ELEMENTWISE_1 = (
    "add", "add_", "sub", "sub_", "div", "div_", "neg", "exp", "exp_", "log", "sin", "cos", "sqrt",
    "rsqrt", "pow", "clamp", "clamp_", "clamp_min", "clamp_max", "where", "maximum", "minimum", "abs", "sign",
    "floor", "ceil", "round", "remainder", "fmod", "lt", "gt", "le", "ge", "eq", "ne", "logical_not", "logical_and",
    "logical_or", "bitwise_not", "bitwise_and", "bitwise_or", "reciprocal", "square", "isnan", "isinf",
    "masked_fill", "masked_fill_", "floor_divide", "rsub", "exp2", "expm1", "log1p", "atan2", "erfinv", "trunc",
    "__and__", "__or__", "__xor__", "__iand__", "__ior__",
)
register("elementwise", *_ELEMENTWISE_1)(_per_element(1, "one operation per output element."))
register("elementwise", "addcmul", "addcdiv", "lerp", "addcmul_", "addcdiv_", "lerp_")(
    _per_element(2, "two operations per output element."))


@register("elementwise", "mul", "mul_")
def mul_flops(args, kwargs, out) -> Cost:
    """One multiply per output element; a complex one (rotary embeddings applied as complex products) is four real
    multiplies and two adds."""
    o = _out(out)
    return Cost((6 if o.dtype.startswith("complex") else 1) * o.numel)


register("elementwise", "polar")(_per_element(4, "r cos(theta) + i r sin(theta): two trigonometric functions and two "
                                                "multiplies per complex output element."))


@register("reduction", "searchsorted")
def searchsorted_flops(args, kwargs, out) -> Cost:
    """Binary search of each value in a sorted sequence of n: ceil(log2(n + 1)) comparisons per value."""
    n = args[0].shape[-1] if args[0].shape else 1
    values = _out(out).numel if _tensors(out) else 1
    return Cost(values * max(1, math.ceil(math.log2(n + 1))))


def _dim_size(x, dim) -> int:
    return x.shape[dim] if x.shape else 1


@register("reduction", "topk")
def topk_flops(args, kwargs, out) -> Cost:
    """The k largest of each row of n (a mixture of experts' router): a k-element heap, ceil(log2(k + 1))
    comparisons per input element."""
    k = int(args[1] if len(args) > 1 else kwargs["k"])
    return Cost(args[0].numel * max(1, math.ceil(math.log2(k + 1))))


@register("reduction", "argsort", "sort")
def sort_flops(args, kwargs, out) -> Cost:
    """A comparison sort of each row of n along the sorted dim: ceil(log2 n) comparisons per input element."""
    dim = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("dim", -1)
    n = _dim_size(args[0], dim)
    return Cost(args[0].numel * max(1, math.ceil(math.log2(max(n, 2)))))


@register("reduction", "bincount")
def bincount_flops(args, kwargs, out) -> Cost:
    """One increment per input value (a mixture of experts counting the tokens each expert got)."""
    return Cost(args[0].numel)


@register("elementwise", "scatter_reduce", "scatter_reduce_", "scatter_add", "scatter_add_")
def scatter_reduce_flops(args, kwargs, out) -> Cost:
    """One reduction (add, multiply, max or min) per source element (``src``, the fourth argument)."""
    src = args[3] if len(args) > 3 else kwargs["src"]
    return Cost(src.numel)


@register("reduction", "sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "prod", "any", "all",
          "norm", "linalg_vector_norm", "var", "std", "var_mean", "cumsum", "logsumexp", "equal")
def reduction_flops(args, kwargs, out) -> Cost:
    """One operation per input element (``equal``: one comparison per element of the first input)."""
    return Cost(args[0].numel)


# -- data movement, creation, embedding, resampling ---------------------------------------------------------------
@register("resample", "upsample_nearest2d", "upsample_nearest1d", "upsample_nearest3d", "_upsample_nearest_exact2d")
def nearest_flops(args, kwargs, out) -> Cost:
    """Nearest-neighbour copies: 0 FLOPs."""
    return Cost(0)


@register("resample", "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d")
def pool_flops(args, kwargs, out) -> Cost:
    """Pooling: one add (or compare) per input element."""
    return Cost(args[0].numel)


@register("resample", "upsample_bilinear2d", "_upsample_bilinear2d_aa", "upsample_bicubic2d")
def bilinear_flops(args, kwargs, out) -> Cost:
    """Bilinear: 4 multiplies + 3 adds per output element."""
    return Cost(7 * _out(out).numel)


@register("embedding", "embedding")
def embedding_flops(args, kwargs, out) -> Cost:
    """A gather: 0 FLOPs; reads the indices and the gathered rows, not the whole table."""
    o = _out(out)
    return Cost(0, 0, bytes_read=args[1].nbytes + o.nbytes, bytes_written=o.nbytes)


register("memory", "clone", "_to_copy", "copy_", "copy", "cat", "concat", "concatenate", "stack", "contiguous",
         "index", "index_select", "_reshape_copy",
         "gather", "scatter", "index_put", "index_put_", "repeat", "flip", "roll", "constant_pad_nd", "tril", "triu",
         "_unsafe_index", "masked_select", "nonzero", "lift_fresh_copy", "to", "type_as", "bernoulli_",
         "pad", "_pad_circular", "reflection_pad2d", "replication_pad2d", "repeat_interleave", "pixel_shuffle",
         "pixel_unshuffle", "pad_sequence", "scatter_", "cartesian_prod")(
    _per_element(0, "data movement: 0 FLOPs, bytes by the default traffic model."))


@register("create", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided")
def empty_flops(args, kwargs, out) -> Cost:
    """Allocation only: no FLOPs, no traffic."""
    return Cost(0, 0, 0, 0)


@register("create", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "arange", "linspace",
          "scalar_tensor", "fill_", "zero_", "fill", "new_zeros", "new_ones", "new_full", "randn", "randn_like",
          "rand", "normal_", "uniform_", "tensor", "_local_scalar_dense")
def fill_flops(args, kwargs, out) -> Cost:
    """Writes its output once, reads nothing."""
    outs = _tensors(out)
    return Cost(0, 0, 0, sum(t.nbytes for t in outs))


@register("view", "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand",
          "unsqueeze", "squeeze", "slice", "select", "split", "split_with_sizes", "chunk", "unbind", "as_strided",
          "alias", "detach", "lift_fresh", "unfold", "diagonal", "narrow", "view_as", "expand_as", "movedim",
          "flatten", "unflatten", "squeeze_", "unsqueeze_", "transpose_", "t_", "_neg_view", "_conj", "resolve_conj",
          "resolve_neg", "numpy_T", "mT", "split_copy", "dropout", "feature_dropout", "alpha_dropout", "detach_",
          "sym_size", "sym_stride", "sym_numel", "is_same_size",
          "_has_compatible_shallow_copy_type", "set_", "result_type", "size", "stride", "dim", "is_nonzero", "item",
          "view_as_complex", "view_as_real", "meshgrid")
def view_flops(args, kwargs, out) -> Cost:
    """A new view of existing memory: 0 FLOPs, 0 bytes (dropout is the identity at inference)."""
    return Cost(0, 0, 0, 0)
