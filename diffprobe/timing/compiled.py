"""Times of compiled (``torch.compile``, Inductor) components, attributed back to the eager records.

A compiled graph cannot be traced op by op: its records (FLOPs, bytes) come from the eager trace, its times from
the profiler. Three facts join them:

* **Which kernels a graph runs.** With ``torch._inductor.config.trace.provenance_tracking_level = 1`` every compiled
  graph carries Inductor's provenance mapping (kept with the graph in Inductor's cache, so a cache hit has it too):
  each kernel, named with a debug handle in launch order (``cpp_fused_gelu_mul_11:30``,
  ``extern_kernels.mm:16``), maps to the post-grad nodes it computes, and those to the nodes of the graph Dynamo
  captured (``postToPre``).
* **Which modules those nodes belong to.** The capture backend (:meth:`CompileCapture.backend`) reads each Dynamo
  node's ``nn_module_stack`` before handing the graph to Inductor: a node's innermost module path is a record's
  ``module``.
* **Which events are a graph's kernels.** Under the profiler every call of a compiled graph is wrapped in
  ``## Call CompiledFxGraph <cache key> ##``; the events directly inside it are its kernels in launch order:
  generated kernels by name (on the CPU with ``cpp.enable_kernel_profile``: ``graph_0_cpp_fused_…``; on CUDA the
  Triton launch's marker), library kernels as the ATen op the wrapper calls (``aten::mm``, cuBLAS / oneDNN
  inside). Their time on CUDA is the device time of the kernels launched inside them; on the CPU, their duration.

A kernel's time goes to the records of its modules whose op family matches (a library GEMM to the module's GEMM
record, one to one; a generated kernel to the module's pointwise / norm / memory records), split by bytes (by
FLOPs between the parts of one attention call, as the eager account does), flagged ``time_apportioned`` when
split. Records of ops the compiler removed (views, fused intermediates) get 0 s. Kernel time that matches no record
is reported as unattributed, with the kernels' names.

Everything after capture works on plain tuples (:func:`kernels_of`, :func:`graph_calls`, :func:`attribute`), so it
is tested on synthetic inputs with known answers as well as on a real compiled run.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import time
from typing import NamedTuple

from diffprobe.patching import Patches
from diffprobe.records.schema import OpRecord
from diffprobe.timing.kernels import DEVICE_KINDS, MARKER, Event, join

CALL_PREFIX = "## Call CompiledFxGraph "
HEAVY = ("conv", "mm", "attention")  # op families a library kernel computes


def compiler_unavailable(device_type: str) -> str | None:
    """Why Inductor cannot generate kernels for this device type here (None: it can): a C++ compiler on the CPU,
    Triton on CUDA."""
    if device_type == "cpu":
        cxx = os.environ.get("CXX", "g++")
        return None if _on_path(cxx) else f"no C++ compiler ({cxx}) for Inductor's CPU kernels"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (Inductor's CUDA kernels need it)"
    return f"Inductor has no kernels for device type {device_type}"


@functools.cache
def _on_path(program: str) -> bool:
    return shutil.which(program) is not None


def module_path(fqn: str) -> str:
    """A record-style module path from a Dynamo ``nn_module_stack`` name:
    ``L['self'].__dict__['_modules']['down_blocks'].0.resnets.0.conv1`` -> ``down_blocks.0.resnets.0.conv1``."""
    s = re.sub(r"\.(?:__dict__\['_modules'\]|_modules)\['([^']+)'\]", r".\1", fqn)
    s = re.sub(r"\['([^']+)'\]", r".\1", s)
    s = re.sub(r"^L\.self\.?", "", s)
    return s.lstrip(".")


def family(name: str) -> str:
    """The op family of a record's op or a post-grad node's name: conv, mm, attention or pointwise (all else)."""
    base = re.sub(r"^(aten\.|aten::|extern_kernels\.|torch\.ops\.aten\.)", "", name).split(".")[0]
    base = re.sub(r"_\d+$", "", base)
    if base in ("conv2d", "convolution", "_convolution", "mkldnn_convolution", "conv1d", "conv3d"):
        return "conv"
    if base in ("linear", "mm", "addmm", "bmm", "baddbmm", "matmul", "_int_mm"):
        return "mm"
    if base == "sdpa" or "scaled_dot_product" in base or "flash_attention" in base or "efficient_attention" in base:
        return "attention"
    return "pointwise"


def kernel_name(name: str) -> str:
    """One spelling for a kernel in provenance and in the profiler: handle, graph prefix and namespaces dropped
    (``extern_kernels.mm:16`` and ``aten::mm`` -> ``mm``; ``graph_0_cpp_fused_silu_3`` -> ``cpp_fused_silu_3``)."""
    name = re.sub(r":\d+$", "", name)
    name = re.sub(r"^graph_\d+_", "", name)
    name = re.sub(r"^(extern_kernels\.|torch\.ops\.[a-z_]+\.|[a-z_]+::)", "", name)
    return re.sub(r"\.default$", "", name)


class Kernel(NamedTuple):
    """One kernel of a compiled graph, from Inductor's provenance: its name (:func:`kernel_name`), whether it is
    a library (extern) kernel, the record-style module paths and op families it computes."""

    name: str
    extern: bool
    modules: frozenset
    families: frozenset


def kernels_of(mapping: dict, nodes: dict[str, str | None], prefix: str) -> list[Kernel]:
    """A graph's kernels in launch order, from its provenance ``mapping`` (``cppCodeToPost``, ``postToPre``) and
    its Dynamo nodes' module paths (``nodes``: node name -> path relative to the compiled module, None: none);
    ``prefix`` is the compiled module's path in the records (``unet``, ``vae``)."""
    to_post = mapping.get("cppCodeToPost", {})
    post_to_pre = mapping.get("postToPre", {})

    def handle(key: str) -> int:
        m = re.search(r":(\d+)$", key)
        return int(m.group(1)) if m else 0

    out = []
    for key in sorted(to_post, key=handle):
        posts = to_post[key]
        modules = set()
        for post in posts:
            for pre in post_to_pre.get(post, []):
                if pre in nodes:
                    rel = nodes[pre] or ""
                    modules.add(f"{prefix}.{rel}" if rel else prefix)
        extern = not re.match(r"(cpp|triton)_", kernel_name(key))
        fams = {family(kernel_name(key))} if extern else {family(p) for p in posts}
        out.append(Kernel(kernel_name(key), extern, frozenset(modules), frozenset(fams)))
    return out


class GraphCall(NamedTuple):
    """One call of a compiled graph in a profile: its cache key, its kernels' names in launch order and their
    seconds (device time on CUDA, duration on the CPU) and start times (ns)."""

    key: str
    names: list
    seconds: list
    starts: list


def graph_calls(events: list[Event]) -> list[GraphCall]:
    """The compiled-graph calls of a profile (plain :class:`Event` tuples, as :func:`~diffprobe.timing.kernels.
    classify` makes them), in time order: the ops directly inside each ``## Call CompiledFxGraph`` are its kernels;
    their time is :func:`~diffprobe.timing.kernels.join`'s (each kernel event stands in for a marker)."""
    calls = sorted((e for e in events if e.kind == "op" and e.name.startswith(CALL_PREFIX)), key=lambda e: e.start_ns)
    ops = sorted((e for e in events if e.kind == "op" and not e.name.startswith(CALL_PREFIX)),
                 key=lambda e: (e.start_ns, -e.end_ns))
    device = [e for e in events if e.kind in DEVICE_KINDS]
    tops: list[tuple[int, int, Event]] = []  # (call index, kernel index, event)
    i = 0
    for ci, call in enumerate(calls):
        end = None
        k = 0
        while i < len(ops) and ops[i].start_ns < call.start_ns:
            i += 1
        j = i
        while j < len(ops) and ops[j].start_ns <= call.end_ns:
            e = ops[j]
            if end is None or e.start_ns >= end:  # not nested in the previous kernel: a kernel of its own
                tops.append((ci, k, e))
                k += 1
                end = e.end_ns
            j += 1
    markers = [Event("marker", f"{MARKER}{n}", e.start_ns, e.end_ns) for n, (_, _, e) in enumerate(tops)]
    joined = join(markers + ops + device)
    out = [GraphCall(c.name[len(CALL_PREFIX):].rstrip(" #"), [], [], []) for c in calls]
    for n, (ci, _, e) in enumerate(tops):
        out[ci].names.append(kernel_name(e.name))
        out[ci].seconds.append(joined.seconds.get(n, 0.0))
        out[ci].starts.append(joined.first_start_ns.get(n, e.start_ns))
    return out


class Attribution(NamedTuple):
    seconds: dict  # record index -> seconds
    starts: dict  # record index -> first kernel start (ns)
    split: set  # record indices whose time is a share of a kernel's
    kernel_s: float  # all kernel time inside compiled graphs
    unattributed_s: float  # kernel time that matched no record
    unattributed: dict  # kernel name -> seconds, for what matched no record
    calls: int  # compiled-graph calls seen
    matched_kernels: int
    kernels: int


def _match(names: list[str], kernels: list[Kernel]) -> list[Kernel | None]:
    """Each profiled kernel's provenance entry: the next one of the same name, in launch order."""
    out: list[Kernel | None] = []
    pos = 0
    for name in names:
        hit = None
        for j in range(pos, len(kernels)):
            if kernels[j].name == name:
                hit, pos = kernels[j], j + 1
                break
        out.append(hit)
    return out


def _candidates(kernel: Kernel, rows: list[OpRecord]) -> list[OpRecord]:
    in_modules = [r for r in rows if r.module in kernel.modules]
    if kernel.extern:  # a library kernel computes one op: its family's records
        picked = [r for r in in_modules if family(r.op) in kernel.families]
    else:  # a generated kernel: the light ops it fused (a GEMM or convolution is a library call beside it)
        light = kernel.families - set(HEAVY) or kernel.families
        picked = [r for r in in_modules if family(r.op) in light]
    return picked or in_modules


def attribute(calls: list[GraphCall], graphs: dict[str, tuple[str, list[Kernel]]], rows: list[OpRecord],
              steps: int) -> Attribution:
    """Give each record of a compiled stage its share of the kernel time (see the module docstring).

    ``graphs``: cache key -> (stage, kernels); ``rows``: the eager records; ``steps``: denoising steps traced. A
    graph called once per step (the denoiser) has its n-th call matched to step n's records; any other graph to
    all the records of its stage."""
    by_stage: dict[str, list[OpRecord]] = {}
    for r in rows:
        by_stage.setdefault(r.stage, []).append(r)
    per_key: dict[str, int] = {}
    for c in calls:
        per_key[c.key] = per_key.get(c.key, 0) + 1
    seen: dict[str, int] = {}
    seconds: dict[int, float] = {}
    starts: dict[int, int] = {}
    split: set = set()
    unattributed: dict[str, float] = {}
    total = lost = 0.0
    matched = count = 0
    cache: dict[tuple, list[OpRecord]] = {}
    for call in calls:
        n = seen.get(call.key, 0)
        seen[call.key] = n + 1
        total += sum(call.seconds)
        count += len(call.names)
        if call.key not in graphs:
            lost += sum(call.seconds)
            for name, s in zip(call.names, call.seconds, strict=True):
                unattributed[name] = unattributed.get(name, 0.0) + s
            continue
        stage, kernels = graphs[call.key]
        pool = by_stage.get(stage, [])
        if per_key[call.key] == steps and any(r.step >= 0 for r in pool):
            pool = [r for r in pool if r.step == n]
        for kernel, name, s, t0 in zip(_match(call.names, kernels), call.names, call.seconds, call.starts, strict=True):
            picked = []
            if kernel is not None:
                matched += 1
                ck = (call.key, n if pool and pool[0].step >= 0 else -1, kernel)
                if ck not in cache:
                    cache[ck] = _candidates(kernel, pool)
                picked = cache[ck]
            if not picked:
                lost += s
                unattributed[name] = unattributed.get(name, 0.0) + s
                continue
            attn = all(r.part for r in picked)
            weights = [(r.flops if attn else r.bytes_read + r.bytes_written) for r in picked]
            if any(weights):  # records that move no data (views) take no share
                picked, weights = zip(*((r, w) for r, w in zip(picked, weights, strict=True) if w), strict=True)
            wsum = sum(weights)
            for r, w in zip(picked, weights, strict=True):
                share = s * (w / wsum if wsum else 1 / len(picked))
                seconds[r.index] = seconds.get(r.index, 0.0) + share
                starts[r.index] = min(starts.get(r.index, t0), t0)
                if len(picked) > 1:
                    split.add(r.index)
    return Attribution(seconds, starts, split, total, lost, unattributed, len(calls), matched, count)


def apply(rows: list[OpRecord], stages: set[str], att: Attribution, origin_ns: int) -> list[OpRecord]:
    """``rows`` with compiled times for the records of ``stages`` (0 s where the compiled graph ran nothing for
    them); other stages keep their eager times."""
    out = []
    for r in rows:
        if r.stage in stages:
            s = att.seconds.get(r.index, 0.0)
            at = (att.starts[r.index] - origin_ns) / 1e9 if r.index in att.starts else float("nan")
            r = r._replace(time_s=s, start_s=at, time_apportioned=r.index in att.split or r.time_apportioned)
        out.append(r)
    return out


class CompileCapture:
    """While active: Inductor keeps provenance and names its CPU kernels in the profiler, and every graph compiled
    through :meth:`backend` is recorded (its kernels, with the stage and module prefix given) under its cache key.
    ``compile_s`` sums the time spent inside the backend (Dynamo's graph to Inductor's compiled code);
    ``cuda_graphs`` compiles every graph as ``mode="reduce-overhead"`` does (Inductor's CUDA graphs)."""

    def __init__(self, cuda_graphs: bool = False):
        self.cuda_graphs = cuda_graphs  # Inductor's CUDA graphs (``mode="reduce-overhead"``) for every graph
        self.graphs: dict[str, tuple[str, list[Kernel]]] = {}
        self.compile_s = 0.0
        self.graph_count = 0
        self._pending: tuple[str, str, dict] | None = None
        self._patches = Patches()

    def __enter__(self) -> "CompileCapture":
        import torch._inductor.config as icfg
        from torch._inductor.output_code import CompiledFxGraph

        patch = icfg.patch({"trace.provenance_tracking_level": 1, "cpp.enable_kernel_profile": True})
        patch.__enter__()
        self._patches.add(lambda: patch.__exit__(None, None, None))
        original = CompiledFxGraph.post_compile
        capture = self

        def post_compile(graph, *args, **kwargs):
            capture._keep(graph)
            return original(graph, *args, **kwargs)

        self._patches.set(CompiledFxGraph, "post_compile", post_compile)
        return self

    def __exit__(self, *exc) -> None:
        self._patches.restore()

    def _keep(self, graph) -> None:
        import json

        if self._pending is None:
            return
        stage, prefix, nodes = self._pending
        mapping = json.loads(getattr(graph, "inductor_provenance_mapping_str", None) or "{}")
        key = getattr(graph, "_fx_graph_cache_key", None)
        if key:
            self.graphs[key] = (stage, kernels_of(mapping, nodes, prefix))

    def backend(self, stage: str, prefix: str):
        """A ``torch.compile`` backend for the module at ``prefix`` (records' stage ``stage``): Inductor, with the
        captured graph's module paths kept for attribution."""
        from torch._inductor.compile_fx import compile_fx

        def compile_graph(gm, example_inputs):
            nodes = {}
            for node in gm.graph.nodes:
                stack = node.meta.get("nn_module_stack")
                nodes[node.name] = module_path(list(stack.values())[-1][0]) if stack else None
            self._pending = (stage, prefix, nodes)
            self.graph_count += 1
            t0 = time.perf_counter()
            try:
                patches = {"triton.cudagraphs": True} if self.cuda_graphs else {}
                return compile_fx(gm, example_inputs, config_patches=patches)
            finally:
                self.compile_s += time.perf_counter() - t0

        return compile_graph
