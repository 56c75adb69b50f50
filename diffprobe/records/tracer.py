"""Record every ATen operator of a pipeline run as an :class:`~diffprobe.records.schema.OpRecord`.

How it works:

* a ``TorchDispatchMode`` sees every ATen op after autograd and composite decomposition, on any device
  (``meta`` included), and counts it through the formula registry;
* global module hooks keep a stack of frames (module path, stage, UNet level, attention/FFN context), so each
  op is attributed to stage, module, level, layer type and denoising step;
* ``F.scaled_dot_product_attention`` is caught one level up (a ``TorchFunctionMode``), because each backend
  (CPU flash, CUDA flash / efficient / cuDNN, math on meta) decomposes it differently; it is recorded as the
  three parts every backend computes — score, softmax, P·V — so FLOPs are identical across backends and equal
  to the classic (baddbmm, softmax, bmm) processor;
* it only counts and attributes: given a timer (:class:`diffprobe.timing.ops.OpTimer`,
  :class:`diffprobe.timing.kernels.ProfilerTimer`), it calls the timer before and after each call it handles, and
  the timer fills the time columns afterwards.
"""

from __future__ import annotations

import functools
import math
import re
import weakref
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from diffprobe.errors import DiffprobeError
from diffprobe.models.registry import TEXT_ENCODERS, denoiser_name
from diffprobe.patching import Patches
from diffprobe.records.formulas import (
    Cost,
    TensorMeta,
    lookup,
    sdpa_parts,
    sdpa_unfused_bytes,
)
from diffprobe.records.schema import COLUMNS, DENOISER, OpRecord
from diffprobe.records.sdpa import SdpaIntercept, positional

ATTENTION_MODULES = {"Attention", "CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "FluxAttention",
                     "T5Attention", "Gemma2Attention", "SanaMultiscaleLinearAttention"}
_FFN = {"FeedForward", "CLIPMLP", "T5LayerFF", "T5DenseGatedActDense", "Gemma2MLP", "GLUMBConv"}
_ACT = {"GEGLU", "GELU", "ApproximateGELU", "SiLU", "QuickGELUActivation", "GELUActivation", "NewGELUActivation",
        "Mish", "SwiGLU", "GELUTanh", "PytorchGELUTanh"}
_EMBED = {"Timesteps", "TimestepEmbedding", "CLIPTextEmbeddings", "TextTimeEmbedding",
          "Gemma2TextScaledWordEmbedding", "CombinedTimestepTextProjEmbeddings",
          "CombinedTimestepGuidanceTextProjEmbeddings", "PixArtAlphaCombinedTimestepSizeEmbeddings"}
# adaLN: the timestep-conditioned shift / scale / gate of a diffusion transformer (their norm stays ``norm``)
_MODULATION = {"AdaLayerNormZero", "AdaLayerNormZeroSingle", "AdaLayerNormContinuous", "AdaLayerNormSingle",
               "AdaLayerNorm", "SanaModulatedNorm"}
# modules whose outputs condition the blocks on the timestep: every elementwise op that reads them is modulation
_CONDITIONING = {"AdaLayerNormSingle", "CombinedTimestepTextProjEmbeddings",
                 "CombinedTimestepGuidanceTextProjEmbeddings", "PixArtAlphaCombinedTimestepSizeEmbeddings"}
_NORM = {"T5LayerNorm", "Gemma2RMSNorm", "RMSNorm", "LayerNorm", "GroupNorm", "RMSNorm2d"}  # hand-written norms too
_ROPE = {"FluxPosEmbed", "Gemma2RotaryEmbedding"}  # rotary position tables (their application: ROPE_FUNCTIONS)
_LINEAR_ATTN = {"SanaLinearAttnProcessor2_0", "SanaMultiscaleAttnProcessor2_0"}
_LINEAR = {"Linear", "LoRACompatibleLinear"}
_CONV = {"Conv2d", "LoRACompatibleConv", "Conv1d", "Conv3d"}
_QKV = {"to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj", "add_q_proj", "add_k_proj", "add_v_proj", "q", "k", "v"}
_OUT = {"to_out.0", "out_proj", "to_add_out", "SelfAttention.o"}
# functions that apply rotary embeddings inside attention: every op they run is ``rope``
ROPE_FUNCTIONS = (("diffusers.", "apply_rotary_emb"), ("transformers.models.gemma2.", "apply_rotary_pos_emb"))
_DTYPE_NAMES = {d: str(d).removeprefix("torch.") for d in (torch.float32, torch.float16, torch.bfloat16,
                                                           torch.float64, torch.int64, torch.int32, torch.bool)}


class _AttnState:
    __slots__ = ("kind", "softmax_seen", "products")

    def __init__(self, kind: str):
        self.kind = kind
        self.softmax_seen = False
        self.products = 0  # attention products seen (linear attention: kv summary first, then the query product)


class _Frame:
    __slots__ = ("path", "stage", "level", "tokens", "attn", "proj", "lit", "ffn", "act", "embed", "step", "mod",
                 "norm", "rope", "patch", "top")

    def __init__(self, path="", stage="pipeline", level="", tokens=0, attn=None, proj="", lit=False, ffn=False,
                 act=False, embed=False, step=-1, mod=False, norm=False, rope=False, patch=False, top=False):
        self.path, self.stage, self.level, self.tokens = path, stage, level, tokens
        self.attn, self.proj, self.lit, self.ffn, self.act, self.embed, self.step = (
            attn, proj, lit, ffn, act, embed, step)
        self.mod, self.norm, self.rope, self.patch, self.top = mod, norm, rope, patch, top

    def copy(self, **changes) -> "_Frame":
        f = _Frame.__new__(_Frame)
        for k in _Frame.__slots__:
            setattr(f, k, changes.get(k, getattr(self, k)))
        return f


class _Static:
    """What is known about a module before it runs."""

    __slots__ = ("path", "stage", "level", "tokens", "role", "proj", "attn_kind", "is_unet", "conditioning")

    def __init__(self, path, stage, level, tokens, role, proj, attn_kind, is_unet, conditioning=False):
        self.path, self.stage, self.level, self.tokens = path, stage, level, tokens
        self.role, self.proj, self.attn_kind, self.is_unet = role, proj, attn_kind, is_unet
        self.conditioning = conditioning


def _role(module) -> str:
    name = type(module).__name__
    if name in _MODULATION:
        return "modulation"
    if name in _NORM or isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
        return "norm"
    if name in _ROPE:
        return "rope"
    if name in ATTENTION_MODULES:
        return "attention"
    if name in _FFN:
        return "ffn"
    if name in _ACT:
        return "act"
    if name in _EMBED:
        return "embed"
    if name in _LINEAR or isinstance(module, torch.nn.Linear):
        return "linear"
    if name in _CONV or isinstance(module, torch.nn.modules.conv._ConvNd):
        return "conv"
    return ""


def unet_level(path: str) -> str:
    """The level of a module path: UNet ``top``, ``in``, ``embed``, ``down.i``, ``mid``, ``up.i``, ``out``;
    VAE decoder ``dec``, ``dec.mid``, ``dec.up.i``; else ``""``."""
    if path == "unet":
        return "top"  # the UNet's own forward, outside any block (timestep broadcast, casts)
    m = re.match(r"unet\.(down_blocks|up_blocks)\.(\d+)", path)
    if m:
        return ("down." if m.group(1) == "down_blocks" else "up.") + m.group(2)
    if path.startswith("unet.mid_block"):
        return "mid"
    if path.startswith("unet.conv_in"):
        return "in"
    if path.startswith(("unet.conv_norm_out", "unet.conv_out", "unet.conv_act")):
        return "out"
    if path.startswith(("unet.time_", "unet.add_", "unet.class_", "unet.encoder_hid")):
        return "embed"
    m = re.match(r"vae\.decoder\.(up_blocks)\.(\d+)", path)
    if m:
        return "dec.up." + m.group(2)
    if path.startswith("vae.decoder.mid_block"):
        return "dec.mid"
    if path.startswith("vae.decoder") or path.startswith("vae.post_quant_conv"):
        return "dec"
    return ""


_TAINT_PRUNE = 1 << 16
_DIT_IN = {"pos_embed", "patch_embed", "x_embedder"}
_DIT_OUT = {"norm_out", "proj_out"}


def dit_level(path: str, patch_embedder: bool = True, two_streams: bool = False) -> str:
    """The level of a diffusion transformer's module path: ``top`` (its own forward), ``in`` (patch embedding),
    ``embed`` (timestep, guidance, caption and RoPE tables), ``block.i`` (``double.i`` / ``single.i`` in a
    ``two_streams`` transformer such as Flux), ``out`` (final norm and projection). ``patch_embedder``: whether
    the module called ``pos_embed`` embeds patches (PixArt, SD3) rather than making RoPE tables (Flux)."""
    if path == "transformer":
        return "top"
    m = re.match(r"transformer\.(transformer_blocks|single_transformer_blocks)\.(\d+)", path)
    if m:
        kind = ("single." if m.group(1) == "single_transformer_blocks" else "double.") if two_streams else "block."
        return kind + m.group(2)
    head = path.split(".")[1] if "." in path else ""
    if head in _DIT_IN and (head != "pos_embed" or patch_embedder):
        return "in"
    if head in _DIT_OUT:
        return "out"
    return "embed" if head else ""


def image_tokens(latent_hw: tuple[int, int], patch: int) -> int:
    """A diffusion transformer's image tokens for a latent of ``latent_hw`` and patches of ``patch`` latent px."""
    return math.ceil(latent_hw[0] / patch) * math.ceil(latent_hw[1] / patch)


def level_tokens(level: str, latent_hw: tuple[int, int], n_levels: int) -> int:
    """Latent tokens (h*w) at a UNet level, for a latent of ``latent_hw`` and ``n_levels`` resolution levels."""
    h, w = latent_hw
    if level in ("in", "out"):
        depth = 0
    elif level.startswith("down."):
        depth = int(level[5:])
    elif level == "mid":
        depth = n_levels - 1
    elif level.startswith("up."):
        depth = n_levels - 1 - int(level[3:])
    else:
        return 0
    return math.ceil(h / 2**depth) * math.ceil(w / 2**depth)


def _stage_of(component: str, path: str, denoiser: str = "unet") -> str:
    if component == "vae":
        return "vae_encoder" if path.startswith(("vae.encoder", "vae.quant_conv")) else "vae_decoder"
    return DENOISER if component == denoiser else component


def attention_kind(module, path: str) -> str:
    """``self``, ``cross``, ``joint`` (text and image tokens in one sequence: SD3, Flux) or ``linear`` (Sana's
    ReLU linear attention) for an attention module."""
    processor = type(getattr(module, "processor", None)).__name__
    if processor in _LINEAR_ATTN or type(module).__name__ == "SanaMultiscaleLinearAttention":
        return "linear"
    if getattr(module, "add_q_proj", None) is not None or ".single_transformer_blocks." in path:
        return "joint"
    return "cross" if getattr(module, "is_cross_attention", False) else "self"


def den_packs_latents(pipe) -> bool:
    """Whether the pipeline packs 2x2 latent patches into tokens before its transformer (Flux)."""
    return hasattr(type(pipe), "_pack_latents")


_Tensor = torch.Tensor


def _meta(x):
    """``x`` with every tensor (in lists, tuples and dicts) replaced by its :class:`TensorMeta`."""
    if isinstance(x, _Tensor):
        dt = x.dtype
        return TensorMeta(tuple(x.shape), _DTYPE_NAMES.get(dt) or str(dt).removeprefix("torch."), dt.itemsize)
    if isinstance(x, (list, tuple)):
        return [_meta(i) for i in x] if type(x) is list else tuple(_meta(i) for i in x)
    if isinstance(x, dict):
        return {k: _meta(v) for k, v in x.items()}
    return x


def _collect(x, acc: list) -> list:
    """The TensorMetas in ``x`` (nested lists, tuples, dict values), in order."""
    if isinstance(x, TensorMeta):
        acc.append(x)
    elif isinstance(x, (list, tuple)):
        for i in x:
            _collect(i, acc)
    elif isinstance(x, dict):
        for i in x.values():
            _collect(i, acc)
    return acc


def _shapes(metas) -> list[list[int]]:
    return [list(t.shape) for t in metas]


class OpTracer:
    """Context manager recording every op of the pipeline's components into rows of the record schema.

    ``latent_hw``: latent (h, w), for token counts per UNet level. ``cfg``: whether the UNet batch holds both CFG
    branches. ``timer``: an object with ``begin()`` / ``end()`` around the traced region, ``start(first_row)`` and
    ``stop(token, first_row)`` around each call, ``count(first_row, n_rows)`` for a call that made more than one
    record, and ``fill(rows)`` (:class:`~diffprobe.timing.ops.OpTimer`,
    :class:`~diffprobe.timing.kernels.ProfilerTimer`), or None to count only.
    """

    def __init__(self, pipe, *, latent_hw: tuple[int, int], cfg: bool, timer=None):
        self.pipe = pipe
        self.timer = timer
        self.cfg = cfg
        self.rows: list[OpRecord] = []
        self.unsupported: Counter[str] = Counter()
        self.suppress = False
        self.root = _Frame()
        self.stack: list[_Frame] = [self.root]
        self.unet_step = -1
        self.scheduler_step = -1
        self._statics: dict[int, _Static] = {}
        self._formula_cache: dict = {}
        self._patches = Patches()
        self.denoiser = den = denoiser_name(pipe)
        dmodule = getattr(pipe, den)
        self._taint: dict[int, object] = {}  # id -> weakref of tensors that carry the timestep conditioning
        if den == "unet":
            n_levels = len(dmodule.config.block_out_channels)
            level_of = unet_level
        else:
            patch = int(getattr(dmodule.config, "patch_size", 1) or 1) * (2 if den_packs_latents(pipe) else 1)
            n_tokens = image_tokens(latent_hw, patch)
            two = hasattr(dmodule, "single_transformer_blocks")
            patch_embedder = type(getattr(dmodule, "pos_embed", None)).__name__ not in _ROPE

            def level_of(path):
                return dit_level(path, patch_embedder, two) if path.startswith("transformer") else unet_level(path)

            for name, param in dmodule.named_parameters():
                if name.endswith("scale_shift_table"):
                    self._mark(param)
        for comp in (*TEXT_ENCODERS, den, "vae"):
            module = getattr(pipe, comp, None)
            if module is None:
                continue
            for sub, m in module.named_modules():
                path = f"{comp}.{sub}" if sub else comp
                level = level_of(path) if comp in (den, "vae") else ""
                if comp != den:
                    tokens = 0
                elif den == "unet":
                    tokens = level_tokens(level, latent_hw, n_levels)
                else:
                    tokens = n_tokens if level in ("top", "in", "out") or level.startswith(
                        ("block.", "double.", "single.")) else 0
                last2 = ".".join(path.split(".")[-2:])
                leaf = path.rsplit(".", 1)[-1]
                proj = "qkv" if leaf in _QKV else "out" if last2 in _OUT or leaf in ("out_proj", "to_add_out") else (
                    "mlp" if leaf == "proj_mlp" else "")  # Flux's single-stream blocks: the MLP's input linear
                role = _role(m)
                kind = attention_kind(m, path) if role == "attention" else ""
                self._statics[id(m)] = _Static(path, _stage_of(comp, path, den), level, tokens, role, proj, kind,
                                               path == den, type(m).__name__ in _CONDITIONING)

    # -- module context ----------------------------------------------------------------------------------------
    def _push(self, module, *_):
        parent = self.stack[-1]
        st = self._statics.get(id(module))
        if st is None:
            self.stack.append(parent)
            return
        if st.is_unet:
            self.unet_step += 1
            self.root.step = self.unet_step
        step = self.unet_step if st.stage == DENOISER else parent.step if parent.stage == st.stage else -1
        role = st.role
        self.stack.append(_Frame(
            path=st.path, stage=st.stage, level=st.level or parent.level, tokens=st.tokens or parent.tokens,
            attn=_AttnState(st.attn_kind) if role == "attention" else parent.attn,
            proj=st.proj or parent.proj, lit=role in ("linear", "conv"), ffn=role == "ffn" or parent.ffn,
            act=role == "act" or parent.act, embed=role == "embed" or parent.embed, step=step,
            mod=role == "modulation" or parent.mod, norm=role == "norm" or parent.norm,
            rope=role == "rope" or parent.rope, top=st.is_unet,
            patch=parent.patch or (st.level == "in" and st.stage == DENOISER and self.denoiser != "unet")))

    def _pop(self, module=None, _args=None, output=None):
        if len(self.stack) > 1:
            self.stack.pop()
        st = self._statics.get(id(module)) if module is not None else None
        if st is not None and st.conditioning:  # the timestep embedding: what reads it is modulation
            for t in tree_flatten(output)[0]:
                if isinstance(t, torch.Tensor):
                    self._mark(t)

    def _mark(self, t) -> None:
        taint = self._taint
        if len(taint) >= _TAINT_PRUNE:  # forget the tensors freed since (a long run makes many)
            self._taint = taint = {k: r for k, r in taint.items() if r() is not None}
        taint[id(t)] = weakref.ref(t)

    def _tainted(self, t) -> bool:
        r = self._taint.get(id(t))
        return r is not None and r() is t

    def _rope_frame(self, fn):
        """``fn`` (a function applying rotary embeddings) run in a frame whose ops are all ``rope``."""
        tracer = self

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            tracer.stack.append(tracer.stack[-1].copy(rope=True))
            try:
                return fn(*args, **kwargs)
            finally:
                tracer.stack.pop()

        return wrapped

    def _patch_rope_functions(self) -> None:
        import sys

        for prefix, name in ROPE_FUNCTIONS:
            originals = {}
            for mod_name, mod in list(sys.modules.items()):
                fn = getattr(mod, name, None) if mod_name.startswith(prefix) and mod is not None else None
                if callable(fn):
                    wrapped = originals.setdefault(id(fn), self._rope_frame(fn))
                    self._patches.set(mod, name, wrapped)

    def _wrap_scheduler(self):
        sched = self.pipe.scheduler
        original = sched.step

        def step(*args, **kwargs):
            self.scheduler_step += 1
            self.stack.append(_Frame(path="scheduler", stage="scheduler", step=self.scheduler_step))
            try:
                return original(*args, **kwargs)
            finally:
                self.stack.pop()

        self._patches.set(sched, "step", step)

    # -- classification ----------------------------------------------------------------------------------------
    @staticmethod
    def _layer_type(kind: str, f: _Frame) -> str:
        if f.rope and kind != "view":
            return "rope"
        if f.patch and kind != "view":
            return "patchify"
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

    def _conditioned(self, layer_type: str, f: _Frame, args, kwargs, out, outs) -> str:
        """Modulation outside the adaLN modules (a DiT block's own shift, scale and gate): an op reading a tensor
        derived only from the timestep embedding is ``modulation``; its output is such a tensor when every tensor
        it read was one (adaLN's linear: always). Unpatchify: a copy in the transformer's own forward of at least
        one value per image token is ``patchify``."""
        if layer_type == "modulation" and f.mod:
            if self._tainted_inputs(args, kwargs) is not None:
                self._mark_all(out)
            return layer_type
        if f.attn is None and layer_type in ("elementwise", "memory", "view", "activation"):
            marks = self._tainted_inputs(args, kwargs)
            if marks:
                if all(marks):
                    self._mark_all(out)
                if layer_type != "view":
                    return "modulation"
        if f.top and layer_type == "memory" and outs and outs[0].nbytes >= f.tokens * outs[0].itemsize:
            return "patchify"
        return layer_type

    def _tainted_inputs(self, args, kwargs) -> list[bool] | None:
        marks = [self._tainted(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        return marks if any(marks) else None

    def _mark_all(self, out) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._mark(t)

    # -- recording ---------------------------------------------------------------------------------------------
    def _append(self, op, part, f: _Frame, layer_type, ins, outs, cost: Cost, macs_lit, unfused):
        br = cost.bytes_read if cost.bytes_read is not None else sum(x.nbytes for x in ins)
        bw = cost.bytes_written if cost.bytes_written is not None else sum(x.nbytes for x in outs)
        ur, uw = unfused if unfused is not None else (br, bw)
        dtype = (ins or outs)[0].dtype if (ins or outs) else ""
        self.rows.append(OpRecord(
            len(self.rows), op, part, f.stage, f.step, f.path, f.level, f.tokens, layer_type,
            f.attn.kind if (f.attn is not None and layer_type.startswith(("attn", "linattn"))) else "",
            "batched" if (self.cfg and f.stage == DENOISER) else "", _shapes(ins), _shapes(outs), dtype,
            int(cost.flops), int(macs_lit), int(br), int(bw), int(ur), int(uw), math.nan, math.nan, False, False,
        ))

    def record_op(self, func, args, kwargs, out) -> None:
        name = str(func)
        entry = self._formula_cache.get(func)
        if entry is None:
            entry = lookup(name) or False
            self._formula_cache[func] = entry
        margs, mkwargs, mout = _meta(args), _meta(kwargs), _meta(out)
        ins = _collect(mkwargs, _collect(margs, []))
        outs = _collect(mout, [])
        f = self.stack[-1]
        if not entry:
            self.unsupported[name] += 1
            self._append(name, "", f, "other", ins, outs, Cost(0), 0, None)
            return
        cost = entry.fn(margs, mkwargs, mout)
        kind = entry.kind
        if kind == "memory" and any(out is a for a in args):  # e.g. x.to(x.dtype), x.contiguous(): no copy
            cost, kind = Cost(0, 0, 0, 0), "view"
        elif name.startswith("aten.reshape") and not self._viewable(args[0], args[1]):
            kind = "memory"  # a reshape that cannot be a view copies its input
            cost = Cost(0, 0, ins[0].nbytes, outs[0].nbytes)
        if kind == "memory" and name.startswith(("aten._to_copy", "aten.copy_", "aten.to.")) and self._crosses_device(
                args, kwargs, out):
            layer_type = "transfer"
        else:
            layer_type = self._layer_type(kind, f)
            if self.denoiser != "unet" and f.stage == DENOISER:
                layer_type = self._conditioned(layer_type, f, args, kwargs, out, outs)
        macs_lit = cost.macs if (f.lit and kind in ("conv", "matmul")) else 0
        self._append(name, "", f, layer_type, ins, outs, cost, macs_lit, None)

    def _viewable(self, x, shape) -> bool:
        """Whether ``x.reshape(shape)`` is a view (decided from strides, so meta and real tensors agree)."""
        self.suppress, was = True, self.suppress
        try:
            x.view(shape)
            return True
        except RuntimeError:
            return False
        finally:
            self.suppress = was

    @staticmethod
    def _crosses_device(args, kwargs, out) -> bool:
        devs = {x.device.type for x in tree_flatten((args, kwargs, out))[0] if isinstance(x, torch.Tensor)}
        return len(devs) > 1

    def on_sdpa(self, func, args, kwargs):
        """An SDPA call (:class:`~diffprobe.records.sdpa.SdpaIntercept`): run, timed as one, recorded as its three
        parts; on meta its output laid out as the CPU flash kernel lays its own out."""
        if self.suppress:
            return func(*args, **kwargs)
        args, kwargs = positional(args, kwargs)

        def run():
            self.suppress = True
            try:
                if args[0].device.type == "meta":
                    return _flash_layout_output(*args[:3])
                return func(*args, **kwargs)
            finally:
                self.suppress = False

        return self.run_timed(run, self.record_sdpa, args, kwargs)

    def record_sdpa(self, args, kwargs, out) -> None:
        q, k, v = (_meta(a) for a in args[:3])
        mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
        parts = sdpa_parts(q, k, v, has_mask=mask is not None)
        unfused = sdpa_unfused_bytes(q, k, v)
        f = self.stack[-1]
        for part, layer_type in (("score", "attn_score"), ("softmax", "attn_softmax"), ("pv", "attn_pv")):
            ins = [q, k] if part == "score" else [v] if part == "pv" else []
            outs = [_meta(out)] if part == "pv" else []
            self._append("sdpa", part, f, layer_type, ins, outs, parts[part], 0, unfused[part])

    # -- context manager ---------------------------------------------------------------------------------------
    def __enter__(self) -> "OpTracer":
        from torch.nn.modules import module as nn_module

        h1 = nn_module.register_module_forward_pre_hook(self._push)
        h2 = nn_module.register_module_forward_hook(self._pop, always_call=True)
        self._patches.hook(h1)
        self._patches.hook(h2)
        self._wrap_scheduler()
        self._patch_rope_functions()
        if self.timer is not None:
            self.timer.begin()  # start_s counts from here
        self._fmode = SdpaIntercept(self.on_sdpa)
        self._dmode = _OpMode(self)
        self._fmode.__enter__()
        self._dmode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._dmode.__exit__(*exc)
        self._fmode.__exit__(*exc)
        self._patches.restore()
        if self.timer is not None:
            self.timer.end()

    def run_timed(self, fn, record, *rec_args):
        """Run ``fn()``, then ``record(*rec_args, out)``; with a timer, the call is timed as one (its records share
        its time)."""
        timer = self.timer
        if timer is None:
            out = fn()
            record(*rec_args, out)
            return out
        first = len(self.rows)
        token = timer.start(first)
        out = fn()
        timer.stop(token, first)
        record(*rec_args, out)
        if len(self.rows) - first != 1:
            timer.count(first, len(self.rows) - first)
        return out

    def table(self):
        """The records as a pandas DataFrame with the schema's columns (time columns filled by the timer)."""
        import pandas as pd

        if self.timer is not None:
            self.timer.fill(self.rows)
        check_int64_totals(self.rows)
        return pd.DataFrame(self.rows, columns=list(COLUMNS))


INT64_MAX = 2**63 - 1
_COUNT_GROUPS = {"FLOPs": ("flops",), "bytes": ("bytes_read", "bytes_written"),
                 "unfused bytes": ("bytes_read_unfused", "bytes_written_unfused")}


def check_int64_totals(rows: list[OpRecord]) -> None:
    """Refuse a run whose exact totals do not fit the record table's 64-bit integer columns.

    Counts are exact Python integers while traced; the table stores them as int64. When a run's grand total of
    FLOPs (or of bytes read + written) fits, every per-op value and every partial sum of these non-negative
    columns fits too, so the totals of every analysis stay exact."""

    for what, cols in _COUNT_GROUPS.items():
        total = sum(getattr(r, c) for r in rows for c in cols)
        if total > INT64_MAX:
            raise DiffprobeError(f"this run's {what} ({total:.3e}) exceed the 64-bit integers the record table "
                                 f"stores exactly (at most {INT64_MAX:.3e}); use a smaller --height/--width, "
                                 "--batch or --steps")


class _OpMode(TorchDispatchMode):
    def __init__(self, tracer: OpTracer):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tr = self.tracer
        if tr.suppress:
            return func(*args, **kwargs)
        timer = tr.timer
        if timer is not None:  # the common measured path, inlined: start, op, stop (one record per op)
            first = len(tr.rows)
            token = timer.start(first)
            out = func(*args, **kwargs)
            timer.stop(token, first)
            tr.record_op(func, args, kwargs, out)  # exactly one record
            return out
        out = func(*args, **kwargs)
        tr.record_op(func, args, kwargs, out)
        return out


def _flash_layout_output(q, k, v):
    """A meta SDPA output laid out as the CPU flash kernel lays its own out: like the query, (B, N, H, dv) in memory
    when the query is a (B, N, H, d) tensor seen as (B, H, N, d) (the diffusers processors' view), else contiguous.
    Meta's own math fallback returns another layout, which would change later copies."""
    *batch, heads, n, _ = q.shape
    if q.dim() == 4 and q.stride(1) < q.stride(2):
        out = torch.empty((*batch, n, heads, v.shape[-1]), dtype=q.dtype, device="meta")
        return out.transpose(-3, -2)
    return torch.empty((*batch, heads, n, v.shape[-1]), dtype=q.dtype, device="meta")
