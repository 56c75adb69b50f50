"""``diffprobe compare``: several run folders of one kind side by side, with ratios to the first (the baseline).

Profiles are compared by stage time, FLOPs, bytes and peak memory (totals, per stage, per layer type); sweeps by
the points they share. The configuration fields that differ between the runs are listed (e.g. device, dtype,
model) — that is usually the point of the comparison.
"""

from __future__ import annotations

from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.records.runfolder import read_result, write_json

CONFIG_KEYS = ("model", "height", "width", "steps", "batch", "guidance", "device", "dtype", "mode", "weights",
               "prompt", "seed")


def _label(folders: list[Path]) -> list[str]:
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else f"{i + 1}:{n}" for i, n in enumerate(names)]


def _profile_metrics(d: dict) -> dict[str, float]:
    m: dict[str, float] = {}
    for s, v in (d.get("stages") or {}).items():
        m[f"seconds.{s}"] = v
    f = d.get("flops") or {}
    if f:
        m["flops.total"] = f["total"]
        m.update({f"flops.{k}": v for k, v in f["by_stage"].items()})
        m.update({f"flops.{k}": v for k, v in f["by_layer_type"].items() if v})
        m["bytes.total"] = d["bytes"]["total"]
    sec = d.get("seconds") or {}
    m.update({f"seconds.{k}": v for k, v in sec.get("by_layer_type", {}).items()})
    if d.get("peak_memory_bytes"):
        m["peak_memory_bytes"] = d["peak_memory_bytes"]
    return m


def _sweep_metrics(d: dict) -> dict[str, float]:
    m: dict[str, float] = {}
    for p in (d.get("findings") or {}).get("points", []):
        u = p["flops"]["unet"]
        m[f"{p['name']}.unet_flops"] = u["total"]
        m[f"{p['name']}.self_attention_share"] = u.get("self_attention", 0) / (u["total"] or 1)
        if "seconds" in p:
            m[f"{p['name']}.unet_seconds"] = p["seconds"]["stages"].get("unet", 0.0)
    return m


def _sweep_axes(d: dict) -> dict:
    """A sweep's swept values as text (``256,512``) in place of one height, width and batch."""
    pts = [p for p in (d.get("points") or {}).values() if isinstance(p, dict)]
    return {k: ",".join(str(v) for v in sorted({p[k] for p in pts if k in p})) or None
            for k in ("height", "width", "batch")}


def compare_runs(folders: list[str | Path], out: str | Path | None = None, force: bool = False) -> dict:
    """Compare run folders; writes ``compare.json``, ``comparison.parquet`` and ``report.html`` into ``out``
    (a new or empty folder, never one of the inputs; ``force`` replaces an earlier comparison there). A run that
    did not finish is marked (``status`` per run, a sentence in ``warnings``), not dropped."""
    import pandas as pd

    from diffprobe.records.runfolder import prepare_out_dir

    if len(folders) < 2:
        raise DiffprobeError("compare needs at least two run folders")
    paths = [Path(f) for f in folders]
    if out is not None and str(out).strip() and any(Path(out).resolve() == p.resolve() for p in paths):
        raise DiffprobeError(f"--out {out} is one of the runs being compared; name a new folder for the comparison")
    loaded = [read_result(p) for p in paths]
    from diffprobe.analyses.sweep import current_findings

    loaded = [(k, {**d, "findings": current_findings(p, d)} if k == "sweep" else d)
              for p, (k, d) in zip(paths, loaded, strict=True)]
    kinds = {k for k, _ in loaded}
    if "compare" in kinds:
        raise DiffprobeError("compare takes profile or sweep folders, not an earlier comparison")
    if len(kinds) > 1:
        desc = ", ".join(f"{p} is a {k}" for p, (k, _) in zip(paths, loaded, strict=True))
        raise DiffprobeError(f"cannot compare runs of different kinds ({desc}); compare profiles with profiles "
                             "and sweeps with sweeps")
    kind = kinds.pop()
    labels = _label(paths)
    runs, metrics = [], {}
    for label, path, (_, d) in zip(labels, paths, loaded, strict=True):
        conf = d if kind == "profile" else {**d.get("config", {}), "model": d.get("model"), "mode": d.get("mode"),
                                            **_sweep_axes(d)}
        status = d.get("status", "ok") if kind == "profile" else ("ok" if d.get("complete", True) else "incomplete")
        runs.append({"label": label, "dir": str(path), "status": status, **{k: conf.get(k) for k in CONFIG_KEYS}})
        metrics[label] = _profile_metrics(d) if kind == "profile" else _sweep_metrics(d)
    if kind == "sweep":
        common = set.intersection(*(set(m) for m in metrics.values()))
        if not common:
            raise DiffprobeError("these sweeps share no resolution/batch point; nothing to compare")
    differs = [k for k in CONFIG_KEYS if len({str(r[k]) for r in runs}) > 1]
    base = labels[0]
    keys = list(dict.fromkeys(k for m in metrics.values() for k in m))
    table = {k: {lb: metrics[lb].get(k) for lb in labels} for k in keys}
    ratios = {k: {lb: (v / table[k][base]) if (v is not None and table[k][base]) else None
                  for lb, v in row.items()} for k, row in table.items()}
    out_dir = prepare_out_dir(out, "compare", force)
    from diffprobe.records.schema import SCHEMA_VERSION

    warnings = [f"{r['label']} did not finish (status {r['status']}"
                + (f": {d.get('error')}" if d.get("error") else "") + "); its numbers cover only what it measured"
                for r, (_, d) in zip(runs, loaded, strict=True) if r["status"] != "ok"]
    result = {"schema_version": SCHEMA_VERSION, "kind": "compare", "of": kind, "baseline": base, "runs": runs,
              "differs": differs, "metrics": table, "ratios": ratios, "warnings": warnings, "run_dir": str(out_dir)}
    write_json(out_dir / "compare.json", result)
    frame = pd.DataFrame([{"metric": k, "run": lb, "value": v, "ratio_to_baseline": ratios[k][lb]}
                          for k, row in table.items() for lb, v in row.items()])
    from diffprobe.records.runfolder import atomic_write

    atomic_write(out_dir / "comparison.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    from diffprobe.report.html import build_report

    build_report(out_dir)
    return result


def compare_report(folder: Path, d: dict) -> Path:
    from diffprobe.report import figures as figs
    from diffprobe.report.html import Page, table
    from diffprobe.report.text import compare_rows
    from diffprobe.report.units import si_scale

    labels = [r["label"] for r in d["runs"]]
    page = Page(folder, f"diffprobe compare — {len(labels)} {d['of']} runs", f"baseline: {d['baseline']}")
    for w in d.get("warnings", []):
        page.banner(w, fail=True)
    page.findings([f"The runs differ in: {', '.join(d['differs']) or 'nothing in their configuration'}."]
                  + _ratio_sentences(d))
    page.h2("Runs")
    page.add(table(["run", "status", *CONFIG_KEYS, "folder"],
                   [[r["label"], r.get("status", "ok"), *("—" if r.get(k) is None else r.get(k) for k in CONFIG_KEYS),
                     r["dir"]] for r in d["runs"]]))
    page.h2("Metrics (value, and ratio to the baseline)")
    page.add(table(["metric", *labels], compare_rows(d)))
    if d["of"] == "profile":
        stage = {k.split(".", 1)[1]: v for k, v in d["metrics"].items()
                 if k.startswith("seconds.") and k.split(".", 1)[1] in ("text_encoder", "unet", "vae_decoder",
                                                                        "scheduler", "total")}
        if any(v for row in stage.values() for v in row.values() if v):
            page.figure(figs.compare_bars(labels, {k: {lb: v or 0 for lb, v in r.items()} for k, r in stage.items()},
                                          "seconds", "measured time by stage"), "compare_seconds",
                        "measured seconds by stage, one bar per run")
        flops = {k.split(".", 1)[1]: v for k, v in d["metrics"].items() if k.startswith("flops.")
                 and k != "flops.total" and k.split(".", 1)[1] not in ("text_encoder", "text_encoder_2", "unet",
                                                                       "vae_decoder", "scheduler", "pipeline")}
        if flops:
            scale, unit = si_scale(max((v or 0) for r in flops.values() for v in r.values()), "FLOP")
            page.figure(figs.compare_bars(labels, {k: {lb: (v or 0) / scale for lb, v in r.items()}
                                                   for k, r in flops.items()}, unit, "FLOPs by layer type"),
                        "compare_flops", "FLOPs by layer type, one bar per run")
    return page.write()


def _ratio_sentences(d: dict) -> list[str]:
    out = []
    base = d["baseline"]
    for key, what in (("seconds.total", "total measured time"), ("flops.total", "traced FLOPs"),
                      ("peak_memory_bytes", "peak memory")):
        row = d["ratios"].get(key)
        if not row:
            continue
        for lb, r in row.items():
            if lb != base and r is not None:
                out.append(f"{lb}: {what} ×{r:.3g} of {base}.")
    return out
