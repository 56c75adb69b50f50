"""The report page of a comparison (``compare.json``, written by :mod:`diffprobe.run.compare`)."""

from __future__ import annotations

from pathlib import Path

from diffprobe.analyses.compare import CONFIG_KEYS
from diffprobe.records.documents import CompareDocument
from diffprobe.records.schema import STAGES
from diffprobe.report import figures as figs
from diffprobe.report.page import Page, table
from diffprobe.report.text import compare_rows
from diffprobe.units import si_scale


def compare_report(folder: Path, d: CompareDocument) -> Path:
    """The report page of a comparison folder (``compare.json``)."""
    labels = [r["label"] for r in d.runs]
    page = Page(folder, f"diffprobe compare — {len(labels)} {d.of} runs", f"baseline: {d.baseline}")
    for w in d.warnings:
        page.banner(w, fail=True)
    page.findings([f"The runs differ in: {', '.join(d.differs) or 'nothing in their configuration'}."]
                  + _ratio_sentences(d))
    page.h2("Runs")
    page.add(table(["run", "status", *CONFIG_KEYS, "folder"],
                   [[r["label"], r.get("status", "ok"), *("—" if r.get(k) is None else r.get(k) for k in CONFIG_KEYS),
                     r["dir"]] for r in d.runs]))
    page.h2("Metrics (value, and ratio to the baseline)")
    page.add(table(["metric", *labels], compare_rows(d)))
    if d.of == "profile":
        stage = {k.split(".", 1)[1]: v for k, v in d.metrics.items()
                 if k.startswith("seconds.") and k.split(".", 1)[1] in ("text_encoder", "denoiser", "vae_decoder",
                                                                        "scheduler", "total")}
        if any(v for row in stage.values() for v in row.values() if v):
            page.figure(figs.compare_bars(labels, {k: {lb: v or 0 for lb, v in r.items()} for k, r in stage.items()},
                                          "seconds", "measured time by stage"), "compare_seconds",
                        "measured seconds by stage, one bar per run")
        flops = {k.split(".", 1)[1]: v for k, v in d.metrics.items() if k.startswith("flops.")
                 and k != "flops.total" and k.split(".", 1)[1] not in STAGES}
        if flops:
            scale, unit = si_scale(max((v or 0) for r in flops.values() for v in r.values()), "FLOP")
            page.figure(figs.compare_bars(labels, {k: {lb: (v or 0) / scale for lb, v in r.items()}
                                                   for k, r in flops.items()}, unit, "FLOPs by layer type"),
                        "compare_flops", "FLOPs by layer type, one bar per run")
    return page.write()


def _ratio_sentences(d: CompareDocument) -> list[str]:
    out = []
    base = d.baseline
    for key, what in (("seconds.total", "total measured time"), ("flops.total", "traced FLOPs"),
                      ("peak_memory_bytes", "peak memory")):
        row = d.ratios.get(key)
        if not row:
            continue
        for lb, r in row.items():
            if lb != base and r is not None:
                out.append(f"{lb}: {what} ×{r:.3g} of {base}.")
    return out
