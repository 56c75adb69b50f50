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
import weakref
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from diffprobe.models.families import family_of
from diffprobe.models.families.roles import ROPE_FUNCTIONS, attention_kind, is_conditioning, role_of
from diffprobe.models.registry import TEXT_ENCODERS, denoiser_name, denoiser_names
from diffprobe.patching import Patches
from diffprobe.records.formulas import (
    Cost,
    lookup,
    sdpa_parts,
    sdpa_unfused_bytes,
)
from diffprobe.records.frames import AttnState, Frame, Static, collect_metas, op_layer_type, shapes_of, tensor_meta
from diffprobe.records.modules import OUT_LEAVES, OUT_NAMES, QKV_NAMES, image_tokens, level_tokens, stage_of
from diffprobe.records.schema import COLUMNS, DENOISER, OpRecord, check_int64_totals
from diffprobe.records.sdpa import InterruptSafeExit, SdpaIntercept, meta_output, positional

_TAINT_PRUNE = 1 << 16


class OpTracer:
    """Context manager recording every op of the pipeline's components into rows of the record schema.

    ``latent_hw``: latent (h, w), for token counts per UNet level; ``latent_frames``: a video's latent frames.
    ``cfg``: whether the UNet batch holds both CFG branches. ``calls_per_step``: denoiser calls per denoising step
    (2 where the CFG branches are separate calls, recorded as ``cond`` and ``uncond``). ``timer``: an object with
    ``begin()`` / ``end()`` around the traced region, ``start(first_row)`` and ``stop(token, first_row)`` around
    each call, ``count(first_row, n_rows)`` for a call that made more than one record, and ``fill(rows)``
    (:class:`~diffprobe.timing.ops.OpTimer`, :class:`~diffprobe.timing.kernels.ProfilerTimer`), or None to count
    only.
    """

    def __init__(self, pipe, *, latent_hw: tuple[int, int], cfg: bool, timer=None, calls_per_step: int = 1,
                 latent_frames: int = 1):
        self.pipe = pipe
        self.timer = timer
        self.cfg = cfg
        self.calls_per_step = calls_per_step
        self.denoiser_calls = 0
        self.branch = 0  # the CFG branch of the current denoiser call, where branches are separate calls
        self.rows: list[OpRecord] = []  # the records traced (an analytic run's replayed blocks: ``replays``)
        self.replays: list[tuple[int, int, int, int]] = []
        self.unsupported: Counter[str] = Counter()
        self.suppress = False
        self.root = Frame()
        self.stack: list[Frame] = [self.root]
        self.denoiser_step = -1
        self.scheduler_step = -1
        self._statics: dict[int, Static] = {}
        self._formula_cache: dict = {}
        self._patches = Patches()
        self.denoiser = den = denoiser_name(pipe)
        dmodule = getattr(pipe, den)
        self._taint: dict[int, object] = {}  # id -> weakref of tensors that carry the timestep conditioning
        # id -> weakref of the denoiser's RoPE tables and what was computed from them inside attention (where a
        # processor applies them in a function of its own, which no name patch reaches: Wan's)
        self._rope_tables: dict[int, object] = {}
        family = family_of(pipe)
        level_of = family.level
        if den == "unet":
            n_levels = len(dmodule.config.block_out_channels)
        dens = denoiser_names(pipe)  # the denoiser, and Wan 2.2's second expert: both the denoiser stage
        if den != "unet":
            patch = family.patch_size(dict(dmodule.config)) * family.latent_patch
            n_tokens = image_tokens(latent_hw, patch) * latent_frames  # a video's latent frames (temporal patch 1)
            for expert in dens:
                for name, param in getattr(pipe, expert).named_parameters():
                    if name.endswith("scale_shift_table"):
                        self._mark(param)
        for comp in (*TEXT_ENCODERS, *dens, "vae"):
            module = getattr(pipe, comp, None)
            if module is None:
                continue
            for sub, m in module.named_modules():
                path = f"{comp}.{sub}" if sub else comp
                level = level_of(path) if comp in (*dens, "vae") else ""
                if comp not in dens:
                    tokens = 0
                elif den == "unet":
                    tokens = level_tokens(level, latent_hw, n_levels)
                else:
                    tokens = n_tokens if level.startswith(family.image_levels) else 0
                last2 = ".".join(path.split(".")[-2:])
                leaf = path.rsplit(".", 1)[-1]
                out = last2 in OUT_NAMES or leaf in OUT_LEAVES
                proj = family.projections.get(leaf) or ("qkv" if leaf in QKV_NAMES else "out" if out else (
                    "mlp" if leaf == "proj_mlp" else ""))  # Flux's single-stream blocks: the MLP's input linear
                role = role_of(path, m, family.path_roles)
                kind = attention_kind(m, path, family.joint_paths, family.cross_paths) if role == "attention" else ""
                self._statics[id(m)] = Static(path, stage_of(den if comp in dens else comp, path, den), level, tokens,
                                               role, proj, kind, path in dens, is_conditioning(m))

    # -- module context ----------------------------------------------------------------------------------------
    def _push(self, module, *_):
        parent = self.stack[-1]
        st = self._statics.get(id(module))
        if st is None:
            self.stack.append(parent)
            return
        if st.is_unet:
            self.denoiser_step, self.branch = divmod(self.denoiser_calls, self.calls_per_step)
            self.denoiser_calls += 1
            self.root.step = self.denoiser_step
        step = self.denoiser_step if st.stage == DENOISER else parent.step if parent.stage == st.stage else -1
        role = st.role
        self.stack.append(Frame(
            path=st.path, stage=st.stage, level=st.level or parent.level, tokens=st.tokens or parent.tokens,
            attn=AttnState(st.attn_kind) if role == "attention" else parent.attn,
            proj=st.proj or parent.proj, lit=role in ("linear", "conv"), ffn=role == "ffn" or parent.ffn,
            act=role == "act" or parent.act, embed=role == "embed" or parent.embed, step=step,
            mod=role == "modulation" or parent.mod, norm=role == "norm" or parent.norm,
            rope=role == "rope" or parent.rope, top=st.is_unet,
            moe=role if role.startswith("moe") else parent.moe,
            patch=parent.patch or (st.level == "in" and st.stage == DENOISER and self.denoiser != "unet")))

    def _pop(self, module=None, _args=None, output=None):
        if len(self.stack) > 1:
            self.stack.pop()
        st = self._statics.get(id(module)) if module is not None else None
        if st is not None and st.conditioning:  # the timestep embedding: what reads it is modulation
            for t in tree_flatten(output)[0]:
                if isinstance(t, torch.Tensor):
                    self._mark(t)
        if st is not None and st.role == "rope" and st.stage == DENOISER:  # RoPE tables: applying them is rope
            self._mark_all(output, self._rope_tables)

    def _mark(self, t, taint: dict | None = None) -> None:
        taint = self._taint if taint is None else taint
        if len(taint) >= _TAINT_PRUNE:  # forget the tensors freed since (a long run makes many)
            alive = {k: r for k, r in taint.items() if r() is not None}
            taint.clear()
            taint.update(alive)
        taint[id(t)] = weakref.ref(t)

    def _tainted(self, t, taint: dict | None = None) -> bool:
        r = (self._taint if taint is None else taint).get(id(t))
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
                # the module's own namespace, where an import put the function: a lazy module's getattr (diffusers'
                # and transformers' packages) would look up, or import, what is not there (0.3 s a traced run)
                fn = (getattr(mod, "__dict__", None) or {}).get(name) if mod_name.startswith(prefix) else None
                if callable(fn):
                    wrapped = originals.setdefault(id(fn), self._rope_frame(fn))
                    self._patches.set(mod, name, wrapped)

    def _wrap_scheduler(self):
        sched = self.pipe.scheduler
        original = sched.step

        def step(*args, **kwargs):
            self.scheduler_step += 1
            self.stack.append(Frame(path="scheduler", stage="scheduler", step=self.scheduler_step))
            try:
                return original(*args, **kwargs)
            finally:
                self.stack.pop()

        self._patches.set(sched, "step", step)

    # -- classification ----------------------------------------------------------------------------------------

    def _conditioned(self, layer_type: str, f: Frame, args, kwargs, out, outs) -> str:
        """Modulation outside the adaLN modules (a DiT block's own shift, scale and gate): an op reading a tensor
        derived only from the timestep embedding is ``modulation``; its output is such a tensor when every tensor
        it read was one (adaLN's linear: always). Unpatchify: a copy in the transformer's own forward of at least
        one value per image token is ``patchify``."""
        if layer_type == "modulation" and f.mod:
            if self._tainted_inputs(args, kwargs) is not None:
                self._mark_all(out)
            return layer_type
        if f.attn is not None and layer_type in ("elementwise", "view") and self._rope_tables:
            if self._tainted_inputs(args, kwargs, self._rope_tables) is not None:
                self._mark_all(out, self._rope_tables)
                return "rope" if layer_type == "elementwise" else layer_type
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

    def _tainted_inputs(self, args, kwargs, taint: dict | None = None) -> list[bool] | None:
        marks = [self._tainted(t, taint) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        return marks if any(marks) else None

    def _mark_all(self, out, taint: dict | None = None) -> None:
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._mark(t, taint)

    # -- recording ---------------------------------------------------------------------------------------------
    def _append(self, op, part, f: Frame, layer_type, ins, outs, cost: Cost, macs_lit, unfused):
        br = cost.bytes_read if cost.bytes_read is not None else sum(x.nbytes for x in ins)
        bw = cost.bytes_written if cost.bytes_written is not None else sum(x.nbytes for x in outs)
        ur, uw = unfused if unfused is not None else (br, bw)
        dtype = (ins or outs)[0].dtype if (ins or outs) else ""
        self.rows.append(OpRecord(
            len(self.rows), op, part, f.stage, f.step, f.path, f.level, f.tokens, layer_type,
            f.attn.kind if (f.attn is not None and layer_type.startswith(("attn", "linattn"))) else "",
            self._cfg_column(f.stage), shapes_of(ins), shapes_of(outs), dtype,
            int(cost.flops), int(macs_lit), int(br), int(bw), int(ur), int(uw), math.nan, math.nan, False, False,
        ))

    def _cfg_column(self, stage: str) -> str:
        if stage != DENOISER or not self.cfg:
            return ""
        return ("cond", "uncond")[self.branch] if self.calls_per_step > 1 else "batched"

    def record_op(self, func, args, kwargs, out) -> None:
        name = str(func)
        entry = self._formula_cache.get(func)
        if entry is None:
            entry = lookup(name) or False
            self._formula_cache[func] = entry
        margs, mkwargs, mout = tensor_meta(args), tensor_meta(kwargs), tensor_meta(out)
        ins = collect_metas(mkwargs, collect_metas(margs, []))
        outs = collect_metas(mout, [])
        f = self.stack[-1]
        if not entry:
            self.unsupported[name] += 1
            self._append(name, "", f, "other", ins, outs, Cost(0), 0, None)
            return
        cost = entry.fn(margs, mkwargs, mout)
        kind = entry.kind
        if kind == "memory" and not name.split(".")[1].endswith("_") and any(out is a for a in args):
            # e.g. x.to(x.dtype), x.contiguous(): no copy (an in-place copy_ returns its target, and writes it)
            cost, kind = Cost(0, 0, 0, 0), "view"
        elif name.startswith("aten.reshape") and not self._viewable(args[0], args[1]):
            kind = "memory"  # a reshape that cannot be a view copies its input
            cost = Cost(0, 0, ins[0].nbytes, outs[0].nbytes)
        if kind == "memory" and name.startswith(("aten._to_copy", "aten.copy_", "aten.to.")) and self._crosses_device(
                args, kwargs, out):
            layer_type = "transfer"
        else:
            layer_type = op_layer_type(kind, f)
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
                    return meta_output(*args[:3])
                return func(*args, **kwargs)
            finally:
                self.suppress = False

        return self.run_timed(run, self.record_sdpa, args, kwargs)

    def record_sdpa(self, args, kwargs, out) -> None:
        q, k, v = (tensor_meta(a) for a in args[:3])
        mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
        parts = sdpa_parts(q, k, v, has_mask=mask is not None)
        unfused = sdpa_unfused_bytes(q, k, v)
        f = self.stack[-1]
        for part, layer_type in (("score", "attn_score"), ("softmax", "attn_softmax"), ("pv", "attn_pv")):
            ins = [q, k] if part == "score" else [v] if part == "pv" else []
            outs = [tensor_meta(out)] if part == "pv" else []
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
        try:  # each mode lets an interrupt through (records.sdpa.InterruptSafeExit)
            self._dmode.__exit__(*exc)
            self._fmode.__exit__(*exc)
        finally:
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

    def replay(self, first: int, n: int, step: int) -> None:
        """Records ``rows[first:first + n]`` occur again here, as ``step``'s (analytic mode's replay of a denoiser
        call identical to a traced one); kept as a block and laid out by :meth:`table`."""
        self.replays.append((len(self.rows), first, n, step))

    def table(self):
        """The records as a pandas DataFrame with the schema's columns (time columns filled by the timer), in
        execution order: replayed blocks where they occurred, with their step, ``replayed`` set and ``index``
        their position."""
        import numpy as np
        import pandas as pd

        if self.timer is not None:
            self.timer.fill(self.rows)
        check_int64_totals(self.rows, self.replays)
        traced = pd.DataFrame(self.rows, columns=list(COLUMNS))
        if not self.replays:
            return traced
        parts, steps, flags, done = [], [], [], 0
        step_col = traced["step"].to_numpy()
        for at, first, n, step in self.replays:
            parts.append(np.arange(done, at))
            steps.append(step_col[done:at])
            flags.append(np.zeros(at - done, dtype=bool))
            parts.append(np.arange(first, first + n))
            steps.append(np.full(n, step, dtype=step_col.dtype))
            flags.append(np.ones(n, dtype=bool))
            done = at
        parts.append(np.arange(done, len(self.rows)))
        steps.append(step_col[done:])
        flags.append(np.zeros(len(self.rows) - done, dtype=bool))
        out = traced.take(np.concatenate(parts)).reset_index(drop=True)
        out["step"] = np.concatenate(steps)
        out["replayed"] = np.concatenate(flags) | out["replayed"].to_numpy()
        out["index"] = np.arange(len(out))
        return out


class _OpMode(InterruptSafeExit, TorchDispatchMode):
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


