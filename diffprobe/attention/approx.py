"""Approximate attention cores and their exact cost account.

Each method is an attention core (see :mod:`diffprobe.attention.core`) with one pruning parameter:

* ``threshold`` (ε, oracle): all scores and probabilities computed, probabilities < ε dropped before P·V;
* ``topk`` (k, oracle): the k largest scores of each row kept;
* ``predicted`` (ε, rank r): a rank-r random projection of Q and K estimates the probabilities; only entries
  whose estimate is ≥ ε are computed exactly;
* ``block`` (τ, block side b): Q and K mean-pooled per block of b tokens; per query block, key blocks are taken by
  descending pooled mass until τ is covered; attention runs on the kept blocks only (the layout a block-sparse
  kernel can exploit). A call with fewer keys than two blocks (cross-attention over 77 text tokens) runs dense
  SDPA without the predictor: there is no key block to skip. With ``tile`` (t, h, w) and the latent grid of a video
  model, a block is a t x h x w box of the grid (:mod:`diffprobe.attention.tiles`): the video's self-attention
  calls (every query and key a grid token, no text keys) run in tile order, their blocks t·h·w tokens; other calls
  (cross-attention, joint attention with text keys) keep runs of t·h·w tokens of the model's order.

Renormalization is explicit: with ``renormalize`` (default) the kept probabilities are rescaled to sum to 1
per row (the softmax over the kept scores); without it they keep their dense values. Every row keeps at least
one entry: its largest (``threshold``, ``predicted``), its top k (``topk``), its top key block (``block``).
At the no-op value (ε = 0, k ≥ keys, τ = 1) a method runs dense SDPA, so the output equals dense attention
exactly.

Cost account, per call, on the same formulas as the cost model (``formulas.sdpa_parts``): the three attention
parts (score, softmax, P·V) scaled by the fraction of entries kept, plus the predictor's own FLOPs. For the
oracle methods this is the *potential* (what a kernel that knew the kept set would do): finding the set needs
the dense scores, which is why they are oracles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffprobe.analyses.savings import account, approximate_account  # noqa: F401  (re-exported: the API of a run)
from diffprobe.attention import kernels  # called through the module: one place to swap or wrap the kernel
from diffprobe.attention.core import CallInfo
from diffprobe.attention.methods import METHOD_REGISTRY, attention_method
from diffprobe.attention.stats import chunk_rows
from diffprobe.errors import DiffprobeError
from diffprobe.models.families import Family
from diffprobe.parsing import parse_floats, parse_ints
from diffprobe.records.formulas import TensorMeta, sdpa_parts

METHODS = tuple(METHOD_REGISTRY)  # threshold, topk, predicted, block
MASKED_NOTE = ("{n} of {total} attention calls carry a key-padding mask (cross-attention over padded text): the "
               "methods leave those calls dense, so their savings come from the other calls only")


def check_model(family: Family, model: str, method: str) -> None:
    """Refuse an attention method on a model where it would change no call (every row would equal dense)."""
    if family.approx_unsupported:
        raise DiffprobeError(f"{method}: not yet available on {model} ({family.title}): "
                             f"{family.approx_unsupported}")
    why = family.no_softmax
    if why:
        raise DiffprobeError(f"{method}: {model}: {why}, so {method} would change nothing (the sparsity "
                             "probe of its cross-attention still applies)")


def masked_note(calls: list[dict]) -> list[str]:
    """A line when some calls were left dense for their mask (see :data:`MASKED_NOTE`)."""
    n = sum(1 for c in calls if c.get("masked"))
    return [MASKED_NOTE.format(n=n, total=len(calls))] if n else []


JOINT_NOTE = ("joint attention: its text keys are kept dense by every attention method (few, and read by every "
              "image token); the methods skip among the image keys")
PARAM = {name: m.param for name, m in METHOD_REGISTRY.items()}
NOOP = {name: m.noop for name, m in METHOD_REGISTRY.items()}


def parse_values(method: str, text: str, name: str | None = None) -> list[float]:
    """The parameter values of ``method`` from a comma list (``text``, called ``name`` in errors: default the
    method's parameter), each checked against the method's domain (:class:`ParameterError`)."""
    m = attention_method(method)
    name = name or m.param
    values = [float(v) for v in parse_ints(text, name)] if m.integer else list(
        parse_floats(text, name, 0, math.inf, True))
    return [m.check(v) for v in values]


def check_param(method: str, value: float) -> float:
    return attention_method(method).check(value)


def _meta(t: torch.Tensor) -> TensorMeta:
    return TensorMeta(tuple(t.shape), str(t.dtype).removeprefix("torch."), t.element_size())


class ApproxAttention:
    """An attention core for one method and parameter; ``calls`` holds each call's cost account."""

    def __init__(self, method: str, value: float, *, renormalize: bool = True, block: int = 64, rank: int = 8,
                 seed: int = 0, max_elements: int = 2**22, backend: str = "auto", save_masks: bool = False,
                 mask_interval: int = 1, tile: tuple[int, int, int] | None = None,
                 grid: tuple[int, int, int] | None = None):
        self.spec = attention_method(method)
        self.method, self.value = method, self.spec.check(value)
        if not (isinstance(mask_interval, int) and mask_interval >= 1):
            raise DiffprobeError(f"mask interval must be a whole number of steps >= 1, got {mask_interval}")
        # block method: a layer's block mask is predicted at a step and reused for the next mask_interval - 1
        # steps (no predictor run on those), as consecutive steps keep nearly the same blocks (sparsity's
        # mask_step_overlap)
        self.mask_interval = mask_interval
        self._mask_cache: dict[str, tuple[int, tuple[torch.Tensor, ...]]] = {}
        # the kernel layout of a reused index (FlexAttention's BlockMask on CUDA): built once per prediction
        self._layout_cache: dict[str, tuple[tuple[torch.Tensor, ...], kernels.BlockLayout]] = {}
        self._call: CallInfo | None = None
        # save_masks: keep what each call kept, for the mask store: the (query block x key block) tiles holding a
        # kept entry at block side ``block`` and the kept keys per query row (key: the method's value)
        self.save_masks = save_masks
        self.masks: list[dict] = []
        # 3D tiles (the block method on a video's latent grid): blocks are t x h x w boxes of tokens
        self.tile, self.grid, self._order = tile, grid, None
        if tile is not None:
            from diffprobe.attention.tiles import check_tiles

            if grid is not None:
                check_tiles(grid, tile)
            block = math.prod(tile)
        if block < 1:
            raise DiffprobeError(f"block side {block} must be a positive number of tokens")
        if rank < 1:
            raise DiffprobeError(f"predictor rank {rank} must be at least 1")
        self.renormalize, self.block, self.rank, self.seed = renormalize, block, rank, seed
        self.max_elements = max_elements

        if backend not in kernels.BACKENDS:
            raise DiffprobeError(f"unknown block-sparse backend {backend!r}; use one of {', '.join(kernels.BACKENDS)}")
        self.backend = backend  # the block-sparse kernel's backend (method block, renormalized)
        self.warming = False  # set during a warm-up pass: compile the kernel for every shape seen
        self._calls: list[dict] = []
        self._copies: list[int] = []  # the current call's copies that dense SDPA would not make (bytes written)

    @property
    def recorded(self) -> list[dict]:
        """Each call's account as recorded: a kept count the block method left on the device is still a tensor."""
        return self._calls

    @property
    def calls(self) -> list[dict]:
        """Each call's cost account. A kept count still on the device (the block method leaves it there, so that a
        call needs no device sync) is read here, once."""
        for c in self._calls:
            if isinstance(c["kept"], torch.Tensor):
                c["kept"] = int(c["kept"])
                c["flops"] = int(round(c["dense_flops"] * c["kept"] / c["entries"])) + c["predictor_flops"]
        return self._calls

    @property
    def compiles(self) -> bool:
        """Whether this core may compile a kernel on first use of a shape (the block method on the kernel): time
        it only after a warm-up pass (:func:`diffprobe.run.approx.warm_up`)."""
        return self.spec.blocked and self.renormalize and self.value < 1

    def reset(self) -> None:
        """Forget the calls seen so far (after a warm-up pass) and any masks kept for reuse."""
        self._calls.clear()
        self._mask_cache.clear()
        self._layout_cache.clear()

    def is_noop(self, n_keys: int) -> bool:
        return self.spec.is_noop(self.value, n_keys)

    # -- the core --------------------------------------------------------------------------------------------
    def core(self, q, k, v, attn_mask, call: CallInfo):
        self._call = call
        b, h, nq, d = q.shape
        nk = k.shape[2]
        dense = sdpa_parts(_meta(q), _meta(k), _meta(v), has_mask=attn_mask is not None)
        kernel = "dense"
        self._kept_masks = None
        self._copies = []
        short = self.method == "block" and nk < 2 * self.block  # one key block, or one and a ragged part
        if self.is_noop(nk) or attn_mask is not None or short:  # masks never occur in SD UNets; stay exact if
            # they do; a call with fewer keys than two blocks (cross-attention over 77 text tokens, a small level)
            # has nothing a block mask could skip: dense, without running the predictor
            out, kept, predictor = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), b * h * nq * nk, 0
            if self.save_masks:
                self._kept_masks = (torch.ones(b, h, -(-nq // self.block), -(-nk // self.block), dtype=torch.bool),
                                    torch.full((b, h, nq), nk, dtype=torch.int32))
        elif self.method == "block" and self.renormalize and self._tiled(nq, nk):
            out, kept, predictor, kernel = self._tiled_block_sparse(q, k, v)
        elif self.method == "block" and self.renormalize:
            out, kept, predictor, kernel = self._block_sparse(q, k, v)
        else:
            out, kept, predictor = self._approx(q, k, v)
            kernel = "masked-dense"
        if kernel != "dense" and q.transpose(1, 2).is_contiguous() and not out.transpose(1, 2).is_contiguous():
            self._copies.append(_nbytes(out))  # dense SDPA writes the model's (B, N, H, D) order: its reshape is free
        step = call.step
        if self.save_masks and self._kept_masks is not None:
            blocks, rows = self._kept_masks
            self.masks.append({"layer": call.name, "step": step, "attn_kind": call.kind, "q_tokens": nq,
                               "k_tokens": nk, "blocks": {(self.block, self.value): blocks.cpu()},
                               "rows": {self.value: rows.cpu()}})
        entries = b * h * nq * nk
        dense_flops = sum(c.flops for c in dense.values())
        self._calls.append({
            "layer": call.name, "attn_kind": call.kind, "step": step, "call": call.call, "entries": entries,
            "heads": b * h, "q_tokens": nq, "k_tokens": nk, "head_dim": d,  # (batch x heads), its shape
            "kept": kept,
            "masked": attn_mask is not None,
            "dense_flops": dense_flops, "predictor_flops": int(predictor), "kernel": kernel,
            "copies": list(self._copies),  # bytes written by each copy dense SDPA would not make
            "flops": None if isinstance(kept, torch.Tensor) else
            int(round(dense_flops * int(kept) / entries)) + int(predictor),
        })
        return out

    def block_index(self, q, k) -> tuple[tuple[torch.Tensor, ...], int]:
        """The ``block`` method's kept tiles as :func:`predict_block_index` gives them (mask, kept key-block counts
        and indices, kept entries) and the predictor's FLOPs; with ``mask_interval`` > 1 a layer reuses the index
        it predicted within the last ``mask_interval`` steps (0 predictor FLOPs then)."""
        call = self._call
        if self.mask_interval > 1 and call is not None and call.step >= 0 and not self.warming:
            cached = self._mask_cache.get((call.name, call.call))  # each of a step's calls its own (Qwen's CFG)
            if cached is not None and 0 <= call.step - cached[0] < self.mask_interval \
                    and cached[1][0].shape[0] == q.shape[0]:
                return cached[1], 0
            index, predictor = self._predict_blocks(q, k)
            self._mask_cache[(call.name, call.call)] = (call.step, index)
            return index, predictor
        return self._predict_blocks(q, k)

    def _text_blocks(self, block: int = 1) -> tuple[int, int] | None:
        """The call's text keys (joint attention) as a range of key blocks of ``block`` (first, stop), or None:
        the text tokens are few and every image token reads them, so a method skips among the image keys only."""
        text = self._call.text_keys if self._call is not None else None
        return (text.start // block, -(-text.stop // block)) if text is not None else None

    def _text_dense(self, keep: torch.Tensor) -> torch.Tensor:
        """``keep`` (last axis: keys) with the call's text keys kept."""
        text = self._text_blocks()
        if text is None:
            return keep
        keep = keep.clone()
        keep[..., text[0]:text[1]] = True
        return keep

    def _predict_blocks(self, q, k) -> tuple[tuple[torch.Tensor, ...], int]:
        """Predict the kept (query block × key block) tiles (:func:`predict_block_index`) and count the
        predictor's FLOPs. On CUDA the prediction is one compiled function (a few fused kernels instead of some
        twenty small ones, no host sync: the per-call host cost that made the kernel lose end to end)."""
        b, h, nq, d = q.shape
        fn = block_index_function(q, self.value, self.block)
        return (fn(q, k, self.value, self.block, self._text_blocks(self.block)),
                predictor_flops(b * h, nq, k.shape[2], d, self.block))

    def _block_sparse(self, q, k, v):
        """The ``block`` method on the block-sparse kernel: only the kept tiles are computed."""

        nq, nk = q.shape[2], k.shape[2]
        index, predictor = self.block_index(q, k)
        mask, counts, order, kept = index
        if self.warming:  # compile for this shape now, even if this step's mask happens to keep every block
            probe = torch.zeros_like(mask)
            probe[..., 0] = True
            layout = kernels.BlockLayout(probe, nq, nk, self.block, backend=self.backend)
            if layout.backend in ("flex", "cpp"):  # flex compiles per shape; cpp builds (or loads) once
                kernels.block_sparse_attention(q, k, v, layout, self.block)
        # ``kept`` stays a device tensor, read later (``calls``): no device sync here
        if self.save_masks:  # kept keys per row: each query block's kept key blocks' lengths
            cols = _block_lengths(nk, self.block, q.device)
            per_block = torch.einsum("bhij,j->bhi", mask.double(), cols).to(torch.int32)
            self._kept_masks = (mask, per_block.repeat_interleave(self.block, dim=-1)[..., :nq])
        name = self._call.name if self._call is not None else ""
        cached = self._layout_cache.get(name)
        if cached is not None and cached[0] is index:  # a reused index: its layout too (no BlockMask rebuilt)
            layout = cached[1]
        else:
            # on a GPU the all-kept check would sync every call; there a mask that keeps everything runs on the
            # kernel
            layout = kernels.BlockLayout(mask, nq, nk, self.block, backend=self.backend,
                                         check_all_kept=not q.is_cuda, lists=(counts, order))
            if self.mask_interval > 1:
                self._layout_cache[name] = (index, layout)
        self._copies += kernel_copies(q, k, v, layout.backend)
        return kernels.block_sparse_attention(q, k, v, layout, self.block), kept, predictor, layout.backend

    def _tiled(self, nq: int, nk: int) -> bool:
        """Whether this call runs on 3D tiles: a tile and grid are set, and it is the video's self-attention (its
        queries and keys are the grid's tokens, no text keys among them)."""
        if self.tile is None or self.grid is None or nq != nk or nq != math.prod(self.grid):
            return False
        return self._call is None or self._call.text_keys is None

    def _tiled_block_sparse(self, q, k, v):
        """:meth:`_block_sparse` on q, k, v in tile order (its blocks are the 3D tiles), the output put back in the
        model's order."""
        from diffprobe.attention.tiles import inverse_order, tile_order

        if self._order is None or self._order[0].device != q.device:  # the order and its inverse, made once
            perm = tile_order(self.grid, self.tile).to(q.device)
            self._order = perm, inverse_order(perm)
        perm, back = self._order
        out, kept, predictor, backend = self._block_sparse(q[:, :, perm], k[:, :, perm], v[:, :, perm])
        self._copies += [_nbytes(x) for x in (q, k, v, out)]  # Q, K, V gathered into tile order, the output back
        return out[:, :, back], kept, predictor, f"{backend} (3D tiles)"

    def _approx(self, q, k, v):
        """The method's keep rule on exact scores, chunk by chunk of query rows; the kept entries' softmax
        (renormalized) or dense probabilities (not) times V."""
        b, h, nq, d = q.shape
        nk = k.shape[2]
        spec = self.spec
        rows = chunk_rows(nq, nk, b * h, (self.block,) if spec.blocked or self.save_masks else (), self.max_elements)
        tiles, row_kept = [], []
        kt = k.float().transpose(-1, -2)
        vf = v.float()
        state, predictor = spec.prepare(self, q, k)
        outs, kept = [], 0
        for i in range(0, nq, rows):
            qc = q[:, :, i:i + rows].float()
            s = qc @ kt * (1.0 / math.sqrt(d))  # (B, H, rows, Nk)
            keep, cost = spec.keep(self, state, s, qc, i)
            predictor += cost
            if spec.keeps_largest:  # every row keeps at least its largest entry
                keep = keep.scatter(-1, s.argmax(dim=-1, keepdim=True), True)
            if not spec.blocked:  # (block: its tiles already keep the text keys)
                keep = self._text_dense(keep)
            kept += int(keep.sum())
            if self.save_masks:  # a tile is needed if any entry in it is kept
                tiles.append(_tiles(keep, self.block))
                row_kept.append(keep.sum(dim=-1).to(torch.int32))
            if self.renormalize:
                p = s.masked_fill(~keep, float("-inf")).softmax(dim=-1)
            else:  # the dropped probabilities keep their dense values, so dense softmax
                p = s.softmax(dim=-1) * keep
            outs.append(p @ vf)
        if self.save_masks:
            self._kept_masks = (torch.cat(tiles, dim=2), torch.cat(row_kept, dim=2))
        return torch.cat(outs, dim=2).to(q.dtype), kept, predictor


def _nbytes(x: torch.Tensor) -> int:
    return x.numel() * x.element_size()


def kernel_copies(q, k, v, backend: str) -> list[int]:
    """Bytes written by each copy the block-sparse kernel's backend makes: the C++ kernel reads contiguous fp32 Q, K
    and V, where a model's are views of its (B, N, H x D) projections (dense SDPA reads them strided, in place),
    and writes fp32 (cast back to a half dtype)."""
    if backend != "cpp":
        return []
    inputs = [x.numel() * 4 for x in (q, k, v) if x.dtype != torch.float32 or not x.is_contiguous()]
    return inputs + ([_nbytes(q)] if q.dtype != torch.float32 else [])  # its fp32 output cast back


def _tiles(keep: torch.Tensor, bs: int) -> torch.Tensor:
    """The (query block x key block) tiles of side ``bs`` holding a kept entry."""
    b, h, nq, nk = keep.shape
    pad = F.pad(keep, (0, -nk % bs, 0, -nq % bs))
    return pad.view(b, h, pad.shape[2] // bs, bs, pad.shape[3] // bs, bs).any(dim=5).any(dim=3)


def predict_block_index(q: torch.Tensor, k: torch.Tensor, tau: float, block: int,
                        text_blocks: tuple[int, int] | None = None) -> tuple[torch.Tensor, ...]:
    """The ``block`` method's prediction, from Q and K to the kernel's block index in one function of tensors (no
    host sync, so it can be compiled whole): Q and K mean-pooled per block, pooled probabilities per query block,
    key blocks taken by descending mass until τ is covered, key blocks ``text_blocks`` = (first, stop) always kept.

    Returns ``mask`` (B, H, qb, kb) bool, ``counts`` (B, H, qb) int32 kept key blocks per query block, ``order``
    (B, H, qb, kb) int32 their indices first (ascending; what :class:`~diffprobe.attention.kernels.BlockLayout`
    takes as ``lists``) and ``kept`` (a float64 scalar tensor: attention entries kept, ragged blocks counted at
    their length)."""
    b, h, nq, d = q.shape
    nk = k.shape[2]
    q_pool, k_pool = _pool(q.float(), block), _pool(k.float(), block)  # (B, H, qb|kb, d)
    if tau >= 1:
        mask = torch.ones(b, h, q_pool.shape[2], k_pool.shape[2], dtype=torch.bool, device=q.device)
    else:
        bmass = (q_pool @ k_pool.transpose(-1, -2) / math.sqrt(d)).softmax(dim=-1)  # (B, H, qb, kb)
        ranked, rank_order = bmass.sort(dim=-1, descending=True)
        before = ranked.cumsum(dim=-1) - ranked  # mass of the blocks ranked above
        mask = torch.zeros_like(before, dtype=torch.bool).scatter_(-1, rank_order, before < tau - 1e-6)
        if text_blocks is not None:
            mask[..., text_blocks[0]:text_blocks[1]] = True
    counts, order = kernels.kv_block_lists(mask)
    kept = torch.einsum("bhij,i,j->", mask.double(), _block_lengths(nq, block, q.device),
                        _block_lengths(nk, block, q.device))
    return mask, counts, order, kept


def predictor_flops(heads: int, nq: int, nk: int, d: int, block: int) -> int:
    """The ``block`` method's predictor FLOPs for one call over ``heads`` (batch x heads): Q and K pooled per block,
    the pooled scores, their softmax."""
    qb, kb = math.ceil(nq / block), math.ceil(nk / block)
    return heads * (nq + nk) * d + 2 * heads * qb * kb * d + 5 * heads * qb * kb


def block_index_function(q: torch.Tensor, tau: float, block: int):
    """What a ``block`` call runs to predict its index: :func:`predict_block_index`, compiled on CUDA where the
    FlexAttention kernel runs (a few fused kernels instead of some twenty small ones, no host sync)."""
    if q.is_cuda and tau < 1 and kernels.flex_unavailable(q.device, block) is None:
        return compiled_predictor()
    return predict_block_index


def compiled_predictor():
    """:func:`predict_block_index` compiled (static shapes: one graph per attention shape and τ), for CUDA."""
    if "predictor" not in _COMPILED:
        kernels.raise_recompile_limits()
        _COMPILED["predictor"] = torch.compile(predict_block_index, dynamic=False)
    return _COMPILED["predictor"]


_COMPILED: dict = {}


def _block_lengths(n: int, block: int, device) -> torch.Tensor:
    """Tokens in each block of ``block`` along a sequence of ``n`` (the last one may be partial)."""
    lengths = torch.full((math.ceil(n / block),), float(block), dtype=torch.float64, device=device)
    lengths[-1] = n - (len(lengths) - 1) * block
    return lengths


def _pool(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over blocks of ``block`` tokens along dim 2 (a ragged last block averages what it has)."""
    b, h, n, d = x.shape
    nb = math.ceil(n / block)
    pad = F.pad(x, (0, 0, 0, nb * block - n))
    sums = pad.view(b, h, nb, block, d).sum(dim=3)
    counts = torch.full((nb,), float(block), device=x.device)
    counts[-1] = n - (nb - 1) * block
    return sums / counts.view(1, 1, nb, 1)


def kernels_used(calls: list[dict]) -> str:
    """Which attention kernels a run's calls ran: ``dense``, ``masked-dense``, ``flex``, ``cpp``, ``gather``,
    comma-joined."""
    return ",".join(sorted({c["kernel"] for c in calls}))


def parse_setting(text: str) -> tuple[str, float]:
    """``"threshold=0.01"`` -> ("threshold", 0.01), validated."""
    method, sep, value = text.partition("=")
    if not sep:
        raise DiffprobeError(f"setting {text!r}: use METHOD=VALUE, e.g. threshold=0.01, topk=16, block=0.9")
    try:
        number = float(value)
    except ValueError:
        raise DiffprobeError(f"setting {text!r}: {value!r} is not a number") from None
    return method.strip(), check_param(method.strip(), number)
