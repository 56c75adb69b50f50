"""The sections of ``diffprobe accel RUN`` (``accel.json``): the designs side by side, latency by layer type."""

from __future__ import annotations

from pathlib import Path

from diffprobe.records.documents import AccelDocument
from diffprobe.report import figures as figs
from diffprobe.report.sections import Figure, Section
from diffprobe.units import fmt_bytes, fmt_s


def accel_rows(r: AccelDocument) -> tuple[list[str], list[list]]:
    """Per design: latency, energy, utilization and speedups."""
    head = ["design", "skips", "latency", "energy", "array util", "DRAM", "vs dense", "vs GPU roofline"]
    if r.gpu.get("measured_s"):
        head.append("vs measured GPU")
    rows = []
    for name, a in r.accel.items():
        row = [name, a["granularity"], fmt_s(a["latency_s"]), f"{a['energy_j']:.3g} J",
               "" if a["utilization"] is None else f"{100 * a['utilization']:.0f}%", fmt_bytes(a["dram_bytes"]),
               f"{a['speedup_over_dense']:.2f}x", f"{a['speedup_over_gpu_roofline']:.2f}x"]
        if r.gpu.get("measured_s"):
            row.append(f"{a.get('speedup_over_measured_gpu', 0):.2f}x")
        rows.append(row)
    return head, rows


def mask_lines(r: AccelDocument) -> list[str]:
    """With measured masks: where they come from and how much of self-attention each granularity keeps."""
    m = r.masks
    if not m:
        return []
    elem = m["element_kept"]
    parts = [f"block {b}: {100 * k:.1f}%" + (f" ({m['block_over_element'][b]:.2f}x the element share)"
                                             if m["block_over_element"].get(b) else "")
             for b, k in m["block_kept"].items() if k is not None]
    lines = [f"masks: {m['dir']} at tau {m['tau']:g}; self-attention kept per key "
             + ("—" if elem is None else f"{100 * elem:.1f}%") + "; " + ", ".join(parts)]
    if m.get("truncated"):
        lines.append("note: the mask store hit its size budget; calls past it reuse the nearest stored step")
    return lines


def designs(r: AccelDocument, folder: Path) -> Section:
    evals = (f"{r.denoiser_evals_measured} of {r.denoiser_evals} denoiser evaluations measured"
             if r.mode == "measured" and r.denoiser_evals_measured is not None
             and r.denoiser_evals_measured < (r.denoiser_evals or 0) else f"{r.mode} run")
    head, rows = accel_rows(r)
    notes = ([f"note: {r.density_note}"] if r.density_note else []) + mask_lines(r)
    if not r.density_note and not r.masks:
        notes.append("attention as the run computed it")
    notes.append(f"speedups against each design's dense counterpart and against the {r.gpu['preset']} roofline "
                 f"({fmt_s(r.gpu['roofline_s'])}); the model and every preset's sources are in docs/accelerator.md")
    return Section(f"Accelerator designs: {r.model} {r.height}x{r.width}, {r.steps} steps ({evals}); GPU "
                   f"roofline {r.gpu['preset']} {fmt_s(r.gpu['roofline_s'])}", head, rows, notes,
                   [Figure("accel", "latency by layer type and energy by component, per design",
                           lambda: figs.accel_figure(r))], left=2, banners=list(r.warnings))


def layer_types(r: AccelDocument, folder: Path) -> Section:
    names = list(r.accel)
    types = sorted({lt for a in r.accel.values() for lt in a["by_layer_type"]},
                   key=lambda lt: -r.accel[names[0]]["by_layer_type"].get(lt, {}).get("latency_s", 0.0))
    rows = []
    for lt in types:
        vals = [r.accel[n]["by_layer_type"].get(lt, {}).get("latency_s", 0.0) for n in names]
        if any(vals):
            rows.append([lt, *(fmt_s(v) for v in vals)])
    return Section("Latency by layer type", ["layer type", *names], rows)


SECTIONS = [designs, layer_types]
