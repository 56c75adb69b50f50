"""The JSON documents of a run folder as typed, versioned dataclasses: ``run.json`` (:class:`RunDocument`),
``sweep.json``, ``approx.json``, ``sparsity.json``, ``compare.json`` and ``accel.json``.

Every writer builds one (``Cls(**fields)`` or :meth:`Document.from_fields`: a key the class does not declare is an
error) and writes :meth:`Document.to_json`; every reader gets one from :func:`read_document` or
:meth:`Document.from_json`, which checks the kind, the version (:data:`~diffprobe.records.schema.VERSIONS`), that
each declared field is there and of its declared type, and answers a foreign, older or damaged document with one
sentence. The top-level fields are typed; what they hold (accounts, tables per stage, points) is plain JSON,
described beside each field.

Names (schema 4): what concerns the UNet or diffusion transformer is ``denoiser_*``; a fraction saved is
``*_share_saved`` (0..1), an absolute count saved ``*_flops_saved`` (FLOPs).

A document is also a read-only mapping of its JSON form (``doc["stages"]``, ``doc.get("approx")``, ``**doc``), so
the analyses, which take tables and JSON alike, read a document or its JSON the same way. Optional fields
(:attr:`Document.OPTIONAL`) are left out of the JSON, and of the mapping, while they are None.
"""

from __future__ import annotations

import json
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from diffprobe.errors import DiffprobeError
from diffprobe.records.schema import SCHEMA_VERSION, VERSIONS

Num = float  # JSON numbers: an int is a float too


class Document(Mapping):
    """Base of the documents: kind, file name and version; JSON in and out; a read-only mapping view."""

    KIND: ClassVar[str] = ""
    FILE: ClassVar[str] = ""
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # fields left out of the JSON while None

    @classmethod
    def version(cls) -> int:
        return VERSIONS.get(cls.KIND, SCHEMA_VERSION)

    def _present(self, name: str) -> bool:
        return not (name in self.OPTIONAL and getattr(self, name) is None)

    def to_json(self) -> dict:
        """The document as written: ``schema_version`` and ``kind`` first, then the fields in declared order."""
        out = {"schema_version": self.version(), "kind": self.KIND}
        out.update((f.name, getattr(self, f.name)) for f in fields(self) if self._present(f.name))
        return out

    @classmethod
    def from_json(cls, data, source: str = "") -> Document:
        """The document of ``data`` (parsed JSON), checked; ``source`` names it in the error."""
        where = source or cls.FILE
        if not isinstance(data, dict) or "schema_version" not in data or "kind" not in data:
            raise DiffprobeError(f"{where} was not written by diffprobe (no schema_version/kind)")
        if data["kind"] != cls.KIND:
            raise DiffprobeError(f"{where} holds a {data['kind']} document, not {cls.KIND}")
        if data["schema_version"] != cls.version():
            raise DiffprobeError(f"{where} has schema version {data['schema_version']}; this diffprobe reads version "
                                 f"{cls.version()}: re-run the command that made it")
        return cls.from_fields({k: v for k, v in data.items() if k not in ("schema_version", "kind")}, where)

    @classmethod
    def from_fields(cls, values: Mapping, source: str = "") -> Document:
        """The document of a mapping of its fields (a writer's working state), type-checked."""
        where = source or cls.FILE
        hints = _hints(cls)
        unknown = sorted(set(values) - set(hints) - {"schema_version", "kind"})
        if unknown:
            raise DiffprobeError(f"{where} has fields a {cls.KIND} document does not declare: {', '.join(unknown)}")
        kwargs = {}
        for f in fields(cls):
            if f.name not in values:
                if f.name in _required(cls):
                    raise DiffprobeError(f"{where} lacks the field {f.name!r} (half-written or damaged)")
                continue
            value = values[f.name]
            if not _is(value, hints[f.name]):
                raise DiffprobeError(f"{where}: field {f.name!r} is {type(value).__name__}, expected "
                                     f"{_name(hints[f.name])} (damaged)")
            kwargs[f.name] = value
        return cls(**kwargs)

    # the read-only mapping of the JSON form
    def __getitem__(self, key: str):
        if key == "schema_version":
            return self.version()
        if key == "kind":
            return self.KIND
        if key not in _hints(type(self)) or not self._present(key):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        yield "schema_version"
        yield "kind"
        yield from (f.name for f in fields(self) if self._present(f.name))

    def __len__(self) -> int:
        return 2 + sum(1 for f in fields(self) if self._present(f.name))

    __hash__ = None  # mutable (a sweep's state fills in as it runs)


_HINTS: dict[type, dict] = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items() if k in {f.name for f in fields(cls)}}
    return _HINTS[cls]


def _required(cls) -> set[str]:
    from dataclasses import MISSING

    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


def _is(value, hint) -> bool:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_is(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    hint = typing.get_origin(hint) or hint
    if hint is float:  # numpy numbers too (the writers' tables)
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    return isinstance(value, hint)


def _name(hint) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_name(h) for h in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(typing.get_origin(hint) or hint, "__name__", str(hint))


@dataclass(eq=False)
class RunDocument(Document):
    """``run.json``: one profile run (measured or analytic) and its cost accounts."""

    KIND: ClassVar[str] = "profile"
    FILE: ClassVar[str] = "run.json"
    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "denoiser_calls_per_step", "frames", "latent_frames", "tokens",
        "flops", "bytes", "bytes_unfused_total", "macs_conv_linear", "levels", "denoiser_per_call_and_sample", "moe",
        "seconds", "roofline", "warnings",
        "images", "image_complete", "approx", "op_timer", "compiled", "chrome_trace", "machine_speed")

    status: str
    error: str | None
    model: str
    model_title: str
    family: str  # the model family (models/families: sd, sdxl, ..., qwenimage, hidream; video: wan, ..., hunyuanvideo)
    denoiser_kind: str  # "unet" or "transformer"
    weights: str
    random_weights: bool
    note: str | None
    prompt: str
    height: int
    width: int
    steps: int
    scheduler: str  # the diffusers scheduler class that ran (the model's own, or --scheduler's)
    denoiser_evals: int  # evaluations of the full run: one per step, of one or more calls (denoiser_calls_per_step)
    denoiser_evals_measured: int  # of them, those executed
    batch: int
    guidance: Num
    cfg: bool
    seed: int
    device: str
    dtype: str
    mode: str  # "measured" or "analytic"
    compile: bool
    cuda_graphs: bool
    repeat: int
    warmup: int
    params: dict  # parameters per component
    stages: dict  # seconds per stage (median over repeats), "total"
    stage_stats: dict
    step_times: list  # per denoising step: denoiser_s, scheduler_s (median), ...
    projection: dict | None  # the full run projected from the steps measured, when not all ran
    peak_memory_bytes: int
    peak_memory_kind: str
    environment: dict
    run_dir: str | None
    image: str | None
    findings: list = field(default_factory=list)
    denoiser_calls_per_step: int | None = None  # 2 where CFG's branches are separate calls (Qwen-Image), else 1
    frames: int | None = None  # video models: frames generated (None: an image)
    latent_frames: int | None = None  # video models: latent frames (the VAE's temporal compression)
    tokens: int | None = None  # latent tokens per sample the denoiser sees (DiT: frames x h x w / patch; UNet: h x w)
    flops: dict | None = None  # the cost account (see analyses.breakdown.account)
    bytes: dict | None = None
    bytes_unfused_total: int | None = None
    macs_conv_linear: dict | None = None
    levels: list | None = None
    denoiser_per_call_and_sample: dict | None = None  # one denoiser call on one sample (images x CFG branches)
    moe: dict | None = None  # a mixture-of-experts denoiser: experts, top-k, parameters active per token, routing
    seconds: dict | None = None
    roofline: dict | None = None
    warnings: list | None = None
    images: list | None = None
    image_complete: bool | None = None
    approx: dict | None = None  # --approx: the setting's account against dense
    op_timer: dict | None = None
    compiled: dict | None = None
    chrome_trace: str | None = None
    machine_speed: dict | None = None  # a calibrated --hardware's reference rate around the run against its own


@dataclass(eq=False)
class SweepDocument(Document):
    """``sweep.json``: a sweep's configuration, its points' status and its findings."""

    KIND: ClassVar[str] = "sweep"
    FILE: ClassVar[str] = "sweep.json"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("status", "error", "findings", "complete", "wall_s")

    config: dict
    model: str
    mode: str
    hardware: str | None
    random_weights: bool
    points: dict = field(default_factory=dict)  # name -> height, width, batch, status (and dir or message)
    status: str | None = None  # running, ok, interrupted, failed
    error: str | None = None
    findings: dict | None = None  # analyses.sweep.findings of the finished points, with "sentences"
    complete: bool | None = None
    wall_s: Num | None = None


@dataclass(eq=False)
class ApproxDocument(Document):
    """``approx.json``: approximation settings against the dense run on one quality batch."""

    KIND: ClassVar[str] = "approx"
    FILE: ClassVar[str] = "approx.json"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("frames", "tile", "campaign")

    model: str
    height: int
    width: int
    steps: int
    guidance: Num
    seed: int
    prompts: list
    renormalize: bool
    block: int
    rank: int
    mask_interval: int
    repeat: int
    mask_intervals: list
    random_weights: bool
    total_flops: Num
    results: list  # one row per setting (approx.parquet holds the same)
    run_dir: str
    notes: list
    findings: list = field(default_factory=list)
    frames: int | None = None  # a video model's frames (its images are the frames, scored one by one)
    tile: list | None = None  # the block method's 3D tiles (frames x height x width of the token grid), if any
    campaign: dict | None = None  # approx --prompts: every setting's quality over the prompts (campaign.parquet)


@dataclass(eq=False)
class SparsityDocument(Document):
    """``sparsity.json``: the attention-probability statistics of a sparsity run, per resolution."""

    KIND: ClassVar[str] = "sparsity"
    FILE: ClassVar[str] = "sparsity.json"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("summary", "mask_step_overlap", "tiles")

    config: dict
    model: str
    prompt: str
    steps: int
    guidance: Num
    random_weights: bool
    note: str | None
    eps: list
    taus: list
    blocks: list
    max_elements_per_chunk: int
    run_dir: str
    complete: bool
    points: list = field(default_factory=list)  # height, width, dir, image, denoiser_evals_measured
    summary: dict | None = None
    mask_step_overlap: dict | None = None
    findings: list = field(default_factory=list)
    tiles: list | None = None  # video models: the 3D tile shapes probed ("1x8x8"), columns tiles_<shape>_<tau>


@dataclass(eq=False)
class CompareDocument(Document):
    """``compare.json``: metrics of two or more runs of one kind, with ratios to the first."""

    KIND: ClassVar[str] = "compare"
    FILE: ClassVar[str] = "compare.json"

    of: str  # the kind of the runs compared
    baseline: str
    runs: list
    differs: list
    metrics: dict  # metric -> label -> value
    ratios: dict
    warnings: list
    run_dir: str


@dataclass(eq=False)
class AccelDocument(Document):
    """``accel.json``: a profile run's records on accelerator presets against their dense selves and a GPU."""

    KIND: ClassVar[str] = "accel"
    FILE: ClassVar[str] = "accel.json"

    run_dir: str
    model: str
    height: int
    width: int
    steps: int
    mode: str
    density: Num | None
    density_note: str | None
    masks: dict | None
    gpu: dict
    accel: dict  # preset -> design
    denoiser_evals: int | None
    denoiser_evals_measured: int | None
    warnings: list


DOCUMENTS: dict[str, type[Document]] = {c.KIND: c for c in (RunDocument, SweepDocument, ApproxDocument,
                                                             SparsityDocument, CompareDocument, AccelDocument)}


def parse_document(data, source: str) -> Document:
    """The document of parsed JSON of whichever kind it says it is, checked (see :meth:`Document.from_json`)."""
    if not isinstance(data, dict) or "schema_version" not in data or "kind" not in data:
        raise DiffprobeError(f"{source} was not written by diffprobe (no schema_version/kind)")
    cls = DOCUMENTS.get(data["kind"])
    if cls is None:
        raise DiffprobeError(f"{source} holds an unknown kind of document ({data['kind']!r})")
    return cls.from_json(data, source)


def read_document(path: str | Path, cls: type[Document] | None = None) -> Document:
    """The document in ``path``, checked (of class ``cls`` when given); an unreadable file is one sentence."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DiffprobeError(f"{path} is unreadable (half-written or damaged): {exc}") from exc
    return parse_document(data, str(path)) if cls is None else cls.from_json(data, str(path))
