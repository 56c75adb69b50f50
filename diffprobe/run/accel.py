"""``diffprobe accel``: a profile run's records on accelerator designs, written as ``accel.json`` into the run folder
(the report renders it from there), and ``accel gemm``, one GEMM on one array."""

from __future__ import annotations

from pathlib import Path

from diffprobe.analyses import roofline
from diffprobe.analyses.accel import density_curve, evaluate, mask_plans, summary
from diffprobe.errors import DiffprobeError, a
from diffprobe.hardware.accel import AccelPreset, gemm, get_accel, mapping
from diffprobe.hardware.presets import get_preset
from diffprobe.records.documents import AccelDocument
from diffprobe.records.masks import MaskStore
from diffprobe.records.runfolder import read_ops_checked, read_result, write_document

ACCEL_FILE = "accel.json"


def find_masks(masks: str | Path, height: int, width: int) -> MaskStore:
    """The mask store for a run of ``height`` x ``width``: ``masks`` is a folder holding ``masks/`` (a sparsity
    point), ``masks/`` itself, or a sparsity folder with a point at that resolution."""
    path = Path(masks)
    if not path.is_dir():
        raise DiffprobeError(f"--masks {path} is not a folder")
    point = path / "points" / f"{height}x{width}"
    if (point / "masks").is_dir():
        return MaskStore(point)
    if (path / "points").is_dir() and not (path / "masks").is_dir():
        have = ", ".join(sorted(p.name for p in (path / "points").iterdir() if (p / "masks").is_dir())) or "none"
        raise DiffprobeError(f"--masks {path} has no masks at {height}x{width} (points with masks: {have})")
    return MaskStore(path)


def _mask_densities(store: MaskStore, tau: float, blocks: list[int]) -> dict:
    """Kept shares of self-attention in the store at ``tau``: per key (element level) and per block side, weighted
    by each call's size, and how much the element share understates what block hardware must keep."""
    elem_num = elem_den = 0.0
    block = {b: [0.0, 0.0] for b in blocks}
    for e in store.entries:
        if e["attn_kind"] != "self":
            continue
        rows = store.row_keys(e, tau)
        elem_num += float(rows.sum())
        elem_den += float(rows.size) * e["k_tokens"]
        for b in blocks:
            m = store.block_mask(e, b, tau)
            block[b][0] += float(m.mean()) * rows.size * e["k_tokens"]
            block[b][1] += rows.size * e["k_tokens"]
    elem = elem_num / elem_den if elem_den else None
    out = {"tau": tau, "element_kept": elem, "block_kept": {}, "block_over_element": {}}
    for b, (num, den) in block.items():
        kept = num / den if den else None
        out["block_kept"][str(b)] = kept
        out["block_over_element"][str(b)] = kept / elem if kept is not None and elem else None
    return out


def check_accel(archs: str | list[str], density: float | None, arch_flag: str = "--accel",
                density_flag: str = "--accel-density", masks: str | Path | None = None) -> list[AccelPreset]:
    """The presets of ``archs`` (names or TOML paths; a comma list as text), refused with one line where they
    cannot run: none given, unknown or broken presets, a density outside (0, 1], measured ``masks`` and a density
    at once, a design that skips attention with neither."""
    names = [a.strip() for a in archs.split(",") if a.strip()] if isinstance(archs, str) else list(archs)
    if not names:
        raise DiffprobeError(f"{arch_flag} needs at least one accelerator preset")
    presets = [get_accel(n) for n in names]
    if density is not None and not (0 < density <= 1):
        raise DiffprobeError(f"{density_flag} must be in (0, 1], got {density}")
    if masks is not None and density is not None:
        raise DiffprobeError(f"give --masks (measured) or {density_flag} (uniform), not both")
    skipping = [p.name for p in presets if p.granularity != "none"]
    if skipping and density is None and masks is None:
        masks_hint = "--masks DIR (a sparsity run's masks) or " if arch_flag == "--arch" else ""
        raise DiffprobeError(f"{', '.join(skipping)}: presets that skip attention; give {masks_hint}{density_flag} D "
                             "(a uniform kept fraction)")
    return presets


def accel_run(folder: str | Path, archs: str | list[str], density: float | None = None, gpu: str = "H100-SXM",
              write: bool = True, masks: str | Path | None = None, tau: float = 0.95) -> dict:
    """Evaluate the profile run in ``folder`` on each accelerator preset of ``archs`` (names or TOML paths; a
    comma list as text). A design that skips attention follows measured ``masks`` (a sparsity run's mask store at
    mass ``tau``, per step, layer and head) or a uniform ``density`` (a kept fraction of self-attention, labelled
    as such). Each design is compared with its dense counterpart, with ``gpu``'s roofline and, for a run measured
    on CUDA, with the measured GPU."""
    folder = Path(folder)
    kind, d = read_result(folder)
    if kind != "profile":
        raise DiffprobeError(f"{folder} is {a(kind)} folder; accel evaluates a profile run (measured or analytic)")
    ops = read_ops_checked(folder)
    if ops is None or not len(ops):
        raise DiffprobeError(f"{folder} has no op records: profile it with op tracing (the default) first")
    presets = check_accel(archs, density, "--arch", "--density", masks)
    store = _mask_store(masks, d, tau, presets)
    gpu_preset = get_preset(gpu)
    gpu_pred = roofline.prediction(roofline.op_roofline(ops, gpu_preset))
    measured_gpu = d.get("stages") if str(d.get("device", "")).startswith("cuda") and d.get("mode") == "measured" \
        else None
    out: dict = {"run_dir": str(folder), "model": d["model"],
                 "height": d["height"], "width": d["width"], "steps": d["steps"], "mode": d["mode"],
                 "density": density,
                 "density_note": None if density is None else
                 f"a uniform kept density {density:g} of self- and joint attention stands in for measured masks",
                 "masks": None if store is None else {"dir": str(store.path), "truncated": store.index["truncated"],
                                                      **_mask_densities(store, tau, store.index["blocks"])},
                 "gpu": {"preset": gpu_preset.name, "roofline_s": gpu_pred["total_s"],
                         "roofline_by_stage": gpu_pred["by_stage"],
                         "measured_s": measured_gpu.get("total") if measured_gpu else None},
                 "accel": {}, "denoiser_evals": d.denoiser_evals, "denoiser_evals_measured": d.denoiser_evals_measured,
                 "warnings": run_warnings(folder, d)}
    dense_cache: dict[str, dict] = {}
    for p in presets:
        out["accel"][p.name] = _design(ops, p, density, store, tau, dense_cache, gpu_pred["total_s"], measured_gpu)
    if write:
        write_document(folder, AccelDocument.from_fields(out))
    return out


def _mask_store(masks, d: dict, tau: float, presets):
    """The mask store a sparsity run left for this run's size, checked against ``tau`` and the designs' blocks."""
    store = find_masks(masks, d["height"], d["width"]) if masks is not None else None
    if store is None:
        return None
    if tau not in store.index["taus"]:
        raise DiffprobeError(f"--tau {tau:g} is not in the mask store (its taus: "
                             f"{', '.join(f'{t:g}' for t in store.index['taus'])})")
    for p in presets:
        if p.granularity == "block" and p.block not in store.index["blocks"]:
            raise DiffprobeError(f"{p.name} skips {p.block}-token blocks; the mask store has block sides "
                                 f"{', '.join(map(str, store.index['blocks']))}")
    return store


def _design(ops, p, density, store, tau, dense_cache: dict, gpu_s: float, measured_gpu) -> dict:
    """One design's account of the records, against its dense counterpart (cached per definition), the GPU's
    roofline and, measured on CUDA, the GPU itself."""
    plans = mask_plans(store, p, tau) if store is not None and p.granularity != "none" else None
    s = summary(evaluate(ops, p, density, plans), p)
    base = p.dense()
    if p.granularity == "none":
        dense = s
    else:
        key = repr(base.to_dict())
        if key not in dense_cache:
            dense_cache[key] = summary(evaluate(ops, base), base)
        dense = dense_cache[key]
    s["speedup_over_dense"] = dense["latency_s"] / s["latency_s"] if s["latency_s"] else None
    s["energy_over_dense"] = s["energy_j"] / dense["energy_j"] if dense["energy_j"] else None
    s["speedup_over_gpu_roofline"] = gpu_s / s["latency_s"] if s["latency_s"] else None
    if measured_gpu and measured_gpu.get("total"):
        s["speedup_over_measured_gpu"] = measured_gpu["total"] / s["latency_s"]
    if p.granularity != "none":  # what the same design gains at other uniform densities
        s["speedup_vs_density"] = density_curve(ops, p, dense["latency_s"])
    s["definition"] = p.to_dict()
    return s


def run_warnings(folder: Path, d: dict) -> list[str]:
    """What a reader of figures drawn from a profile folder must know first: that the run did not finish, or that
    its records cover only the denoiser evaluations it measured."""
    out = []
    done, full = d.get("denoiser_evals_measured"), d.get("denoiser_evals")
    part = f"the {done} of {full} denoiser evaluations it measured" if done is not None and full else "what it measured"
    if d.get("status", "ok") != "ok":
        out.append(f"{folder} did not finish (status {d.get('status')}"
                   + (f": {d['error']}" if d.get("error") else "") + f"); these figures cover only {part}")
    elif d.get("mode") == "measured" and done is not None and full and done < full:
        out.append(f"{folder} measured {done} of {full} denoiser evaluations (--sample-steps): these figures cover "
                   "those, not the full run")
    return out


def accel_gemm(m: int, k: int, n: int, rows: int, cols: int, dataflow: str, base: str = "sa-dense") -> dict:
    """One ``(m x k) @ (k x n)`` GEMM on a ``rows x cols`` array with ``dataflow``; the other parameters (clock,
    buffers, bandwidth, energies) are preset ``base``'s."""
    from dataclasses import replace

    for flag, v in (("--m", m), ("--k", k), ("--n", n), ("--rows", rows), ("--cols", cols)):
        if v <= 0:
            raise DiffprobeError(f"{flag} must be a positive integer, got {v}")
    p: AccelPreset = replace(get_accel(base), rows=rows, cols=cols, dataflow=dataflow)
    mp = mapping(m, k, n, rows, cols, dataflow)
    c = gemm(m, k, n, p)
    return {"m": m, "k": k, "n": n, "rows": rows, "cols": cols, "dataflow": dataflow, "base_preset": p.name,
            "mapped_rows": mp.mapped_rows, "mapped_cols": mp.mapped_cols, "streamed": mp.streamed,
            "folds": mp.folds, "cycles_per_fold": mp.cycles_per_fold, "compute_cycles": c.compute_cycles,
            "memory_cycles": c.memory_cycles, "cycles": c.cycles, "macs": c.macs,
            "utilization": c.macs / (c.compute_cycles * rows * cols), "sram_bytes": c.sram_bytes,
            "dram_bytes": c.dram_bytes, "energy_j": c.energy_j, "latency_s": c.cycles / p.clock_hz}
