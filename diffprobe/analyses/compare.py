"""Runs side by side: the metrics of each run folder's summary, ratios to the first (the baseline), and which
configuration fields differ (e.g. device, dtype, model — usually the point of the comparison). Profiles are
compared by stage time, FLOPs, bytes and peak memory (totals, per stage, per layer type); sweeps by the points they
share; sparsity runs by their mean statistics per resolution and attention kind; approx runs setting by setting
(what each saved and what it cost in time and quality)."""

from __future__ import annotations

from pathlib import Path

from diffprobe.errors import DiffprobeError, a

CONFIG_KEYS = ("model", "height", "width", "frames", "steps", "batch", "guidance", "device", "dtype", "mode",
               "compile", "cuda_graphs", "weights", "prompt", "seed", "scheduler")


def _label(folders: list[Path]) -> list[str]:
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else f"{i + 1}:{n}" for i, n in enumerate(names)]


def _profile_metrics(d: dict) -> dict[str, float]:
    m: dict[str, float] = {}
    if d.get("tokens"):  # latent tokens per denoiser call and sample (a video's: frames x height x width)
        m["tokens"] = d["tokens"]
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
    if d.get("compiled"):  # apart from the run's time, as the profile reports it
        m["compile_s"] = d["compiled"]["compile_s"]
    if d.get("peak_memory_bytes"):
        m["peak_memory_bytes"] = d["peak_memory_bytes"]
    return m


def _sweep_metrics(d: dict) -> dict[str, float]:
    m: dict[str, float] = {}
    f = d.get("findings") or {}
    for p in f.get("points", []):
        u = p["flops"]["denoiser"]
        tot = u["total"] or 1
        m[f"{p['name']}.image_flops"] = p["flops"]["total"]["total"]  # the whole pipeline, one image
        m[f"{p['name']}.denoiser_flops"] = u["total"]
        m[f"{p['name']}.self_attention_share"] = u.get("self_attention", 0) / tot
        # every attention layer of the denoiser (self, cross, joint, linear: projections included), and the
        # quadratic part of self and joint attention: comparable across UNets and transformers
        m[f"{p['name']}.attention_share"] = sum(u.get(f"{k}_attention", 0) for k in ATTN_KINDS) / tot
        m[f"{p['name']}.attention_core_share"] = u.get("attention_core", 0) / tot
        if "seconds" in p:
            m[f"{p['name']}.denoiser_seconds"] = p["seconds"]["stages"].get("denoiser", 0.0)
    cross = (f.get("crossover") or {}).get("flops")
    if cross and cross.get("side"):
        m["attention_overtakes_px"] = cross["side"]  # self-attention vs conv (UNet), attention vs linear (DiT)
    return m


ATTN_KINDS = ("self", "cross", "joint", "linear")


def _sparsity_metrics(d: dict) -> dict[str, float]:
    """A sparsity run's mean statistics per resolution and attention kind (``64x64.self.below_0.001``)."""
    return {f"{res}.{kind}.{stat}": v for res, s in (d.get("summary") or {}).items()
            for kind, stats in s.get("by_kind", {}).items() for stat, v in stats.items()
            if isinstance(v, (int, float))}


APPROX_METRICS = ("attention_share_saved", "end_to_end_share_saved", "kept_fraction", "denoiser_s", "psnr", "ssim",
                  "accuracy", "clip_score")


def _approx_metrics(d: dict) -> dict[str, float]:
    """An approx run's settings, each by what it saved and what it cost (``block=0.9.psnr``); dense as measured."""
    m: dict[str, float] = {}
    for row in d.get("results", []):
        name = row.get("setting") or row["method"]
        for k in APPROX_METRICS:
            if row.get(k) is not None and not (row["method"] == "dense" and k != "denoiser_s"):
                m[f"{name}.{k}"] = row[k]
    return m


METRICS = {"profile": _profile_metrics, "sweep": _sweep_metrics, "sparsity": _sparsity_metrics,
           "approx": _approx_metrics}
POINT_KINDS = {"sweep": "resolution/batch point", "sparsity": "resolution and attention kind",
               "approx": "setting"}


def _config(kind: str, d: dict) -> dict:
    """The configuration fields of a run summary of ``kind``, as :data:`CONFIG_KEYS` names them."""
    if kind == "profile":
        return {"compile": False, "cuda_graphs": False, **d}
    if kind == "sweep":
        return {**d.get("config", {}), "model": d.get("model"), "mode": d.get("mode"), **_sweep_axes(d)}
    if kind == "sparsity":
        res = sorted(d.get("summary") or {})
        return {**d.get("config", {}), "height": ",".join(r.split("x")[0] for r in res) or None,
                "width": ",".join(r.split("x")[-1] for r in res) or None}
    return {"mode": "measured", **d, "prompt": "; ".join(d.get("prompts", [])[:1])}


def _sweep_axes(d: dict) -> dict:
    """A sweep's swept values as text (``256,512``) in place of one height, width and batch."""
    pts = [p for p in (d.get("points") or {}).values() if isinstance(p, dict)]
    return {k: ",".join(str(v) for v in sorted({p[k] for p in pts if k in p})) or None
            for k in ("height", "width", "batch")}


def compare(loaded: list[tuple[Path, str, dict]]) -> dict:
    """The comparison of run summaries ``(folder, kind, summary)``, the first the baseline: ``of`` (their kind),
    ``runs`` (label, folder, status and configuration each), ``differs``, ``metrics`` (metric -> run -> value),
    ``ratios`` (to the baseline) and ``warnings`` (a run that did not finish is marked, not dropped)."""
    if len(loaded) < 2:
        raise DiffprobeError("compare needs at least two run folders")
    kinds = {k for _, k, _ in loaded}
    if "compare" in kinds:
        raise DiffprobeError("compare takes profile or sweep folders, not an earlier comparison")
    if len(kinds) > 1:
        desc = ", ".join(f"{p} is {a(k)}" for p, k, _ in loaded)
        raise DiffprobeError(f"cannot compare runs of different kinds ({desc}); compare profiles with profiles "
                             "and sweeps with sweeps")
    kind = kinds.pop()
    if kind not in METRICS:
        raise DiffprobeError(f"compare takes profile, sweep, sparsity or approx folders, not {kind} folders")
    labels = _label([p for p, _, _ in loaded])
    runs, metrics = [], {}
    for label, (path, _, d) in zip(labels, loaded, strict=True):
        conf = _config(kind, d)
        status = d.get("status", "ok") if kind == "profile" else (
            d["status"] if d.get("status") not in (None, "ok") else "ok" if d.get("complete", True) else "incomplete")
        runs.append({"label": label, "dir": str(path), "status": status, **{k: conf.get(k) for k in CONFIG_KEYS}})
        metrics[label] = METRICS[kind](d)
    if kind != "profile":
        common = set.intersection(*(set(m) for m in metrics.values()))
        if not common:
            raise DiffprobeError(f"these {kind} runs share no {POINT_KINDS[kind]}; nothing to compare")
    differs = [k for k in CONFIG_KEYS if len({str(r[k]) for r in runs}) > 1]
    base = labels[0]
    keys = list(dict.fromkeys(k for m in metrics.values() for k in m))
    table = {k: {lb: metrics[lb].get(k) for lb in labels} for k in keys}
    ratios = {k: {lb: (v / table[k][base]) if (v is not None and table[k][base]) else None
                  for lb, v in row.items()} for k, row in table.items()}
    warnings = [f"{r['label']} did not finish (status {r['status']}"
                + (f": {d.get('error')}" if d.get("error") else "") + "); its numbers cover only what it measured"
                for r, (_, _, d) in zip(runs, loaded, strict=True) if r["status"] != "ok"]
    return {"kind": "compare", "of": kind, "baseline": base, "runs": runs, "differs": differs, "metrics": table,
            "ratios": ratios, "warnings": warnings}


def rows(result: dict) -> list[dict]:
    """The comparison as long-format rows (metric, run, value, ratio to the baseline): ``comparison.parquet``."""
    return [{"metric": k, "run": lb, "value": v, "ratio_to_baseline": result["ratios"][k][lb]}
            for k, row in result["metrics"].items() for lb, v in row.items()]
