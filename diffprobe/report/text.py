"""The terminal: the sections of a document (:mod:`diffprobe.report.sections`) as rich tables and lines, and the
small outputs of the commands that write no run folder (presets, models, the kernel bench, one GEMM)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from diffprobe.errors import plural
from diffprobe.records.documents import CompareDocument, Document
from diffprobe.report import accel, approx, profile, sweep
from diffprobe.report.sections import Section, build
from diffprobe.units import fmt_bytes, fmt_n, fmt_s

SECTIONS = {"profile": profile.SECTIONS, "sweep": sweep.SECTIONS, "approx": approx.APPROX,
            "sparsity": approx.SPARSITY, "accel": accel.SECTIONS}


def terminal_items(sections: list[Section]) -> list:
    """Each section a terminal shows: its banners (where the terminal prints them), its table titled by the section
    and its notes, one line each."""
    items: list = []
    for s in sections:
        if s.page_only:
            continue
        if s.terminal_banners:
            items += s.banners
        if s.rows:
            t = Table(title=s.title, title_justify="left")
            for i, col in enumerate(s.headers):
                t.add_column(col, justify="left" if i < s.left else "right")
            for i, row in enumerate(s.rows):
                t.add_row(*row, style="bold" if s.total and i == len(s.rows) - 1 else None)
            items.append(t)
        elif s.notes:
            items.append(f"[bold]{s.title}[/]")
        items += s.notes
    return items


def document_items(kind: str, doc: Document, folder: str | Path) -> list:
    """What the terminal prints for a document of ``kind`` read from (or written to) ``folder``."""
    items = terminal_items(build(SECTIONS[kind], doc, Path(folder)))
    if kind != "profile":
        return items
    image = f"  image: {doc.image}" if doc.image else ""
    return profile.headline(doc) + items + [f"run folder: {doc.run_dir}{image}"]


def compare_table(d: CompareDocument) -> Table:
    """Metrics of a comparison, one column per run, ratios to the baseline in parentheses."""
    t = Table(title=f"compare ({d.of} runs; baseline {d.baseline})", title_justify="left")
    t.add_column("metric")
    for r in d.runs:
        status = r.get("status", "ok")
        t.add_column(r["label"] + ("" if status == "ok" else f" ({status})"), justify="right")
    for row in compare_rows(d):
        t.add_row(*row)
    return t


def compare_rows(d: CompareDocument) -> list[list[str]]:
    """[metric, value (×ratio), ...] per metric of a comparison, formatted by the metric's unit."""
    rows = []
    for k, row in d.metrics.items():
        last = k.rsplit(".", 1)[-1]
        fmt = fmt_s if k.startswith("seconds") or k.endswith("seconds") or last == "denoiser_s" else (
            (lambda x: f"{100 * x:.1f}%") if k.endswith("share") or last.endswith("_share_saved") or last in (
                "kept_fraction", "accuracy") or last.startswith(("below_", "keys_frac_", "blocks_", "empty_blocks_"))
            else (lambda x: f"{x:.3g}") if last in ("psnr", "ssim", "entropy", "clip_score") or last.startswith(
                "keys_") else fmt_n)
        cells = []
        for lb, v in row.items():
            r = d.ratios[k][lb]
            cells.append(("" if v is None else fmt(v)) + ("" if r is None or lb == d.baseline else f" (×{r:.3g})"))
        rows.append([k, *cells])
    return rows


def presets_table(rows: list[dict]) -> Table:
    """``diffprobe hardware list``: one row per preset, its dense peaks, bandwidth and memory."""
    t = Table(title="hardware presets (dense peaks)", title_justify="left")
    for col in ("name", "title", "fp32 TFLOP/s", "fp16 TFLOP/s", "bf16 TFLOP/s", "bandwidth", "memory"):
        t.add_column(col, justify="left" if col in ("name", "title") else "right")
    for r in rows:
        if "peak_flops" not in r:
            t.add_row(r["name"], r["title"], "", "", "", "", "")
            continue
        p = r["peak_flops"]
        t.add_row(r["name"], r["title"], *(f"{p[d] / 1e12:.3g}" for d in ("float32", "float16", "bfloat16")),
                  f"{r['memory_bandwidth'] / 1e9:.4g} GB/s", f"{r['memory_bytes'] / 1e9:.3g} GB")
    return t


def preset_lines(d: dict) -> list[str]:
    """``diffprobe hardware show``: a preset's ceilings, ridge points and source."""
    lines = [f"{d['name']}: {d['title']} ({d['kind']})"]
    for dt, v in d["peak_flops"].items():
        lines.append(f"  peak {dt:9s} {v / 1e12:10.4g} TFLOP/s   ridge {v / d['memory_bandwidth']:8.1f} FLOP/byte")
    lines.append(f"  memory bandwidth {d['memory_bandwidth'] / 1e9:.4g} GB/s, memory {d['memory_bytes'] / 1e9:.3g} GB")
    lines.append(f"  source: {d['source']}")
    return lines


def bench_lines(r: dict) -> list[str]:
    """``diffprobe kernels bench``: the timings, speedups and the float64 check of one grid point."""
    lines = [f"{r['tokens']} tokens, {r['heads']} heads × {r['head_dim']}, batch {r['batch']}, {r['dtype']} on "
             f"{r['device']} ({r['device_name']}), blocks of {r['block_size']}, kept density {r['kept_density']:.3f}",
             f"dense SDPA ({r['dense_backend']}): dense_s {r['dense_s']:.6f}"]
    if "dense_default_s" in r:
        lines.append(f"dense SDPA (its own backend choice): {r['dense_default_s']:.6f}")
    lines.append(f"block-sparse ({r['backend']}): sparse_s {r['sparse_s']:.6f}  (first call {r['first_call_s']:.2f} "
                 f"s); kernel alone on a prepared layout: kernel_s {r['kernel_s']:.6f}")
    lines.append(f"speedup {r['speedup']:.2f}x, kernel alone {r['kernel_speedup']:.2f}x  "
                 f"(limit 1/density {r['limit']:.2f}x)")
    if r.get("above_limit_note"):
        lines.append(f"note: {r['above_limit_note']}")
    if "efficiency" in r:
        lines.append(f"efficiency (dense_s x kept density / sparse_s) {r['efficiency']:.2f}, kernel alone "
                     f"{r['kernel_efficiency']:.2f}; CPU {r['cpu_model']}, capability {r['cpu_capability']}")
    if "max_rel_error" in r:
        lines.append(f"max_rel_error {r['max_rel_error']:.2e} vs float64 masked reference ({r['checked_heads']} "
                     "heads)")
    p = r.get("predicted")
    if p:
        lines.append(f"predicted by {p['preset']} ({p['curve_backend']} kernel curve): kernel_s {p['kernel_s']:.6f} "
                     f"({p['kernel_error']:+.1%}), dense_s {p['dense_s']:.6f} ({p['dense_error']:+.1%})")
        if p.get("caveat"):
            lines.append(f"note: {p['caveat']}")
    return lines


def models_table(rows: list[dict]) -> Table:
    """``diffprobe models``: the embedded architectures with their parameter counts."""
    t = Table(title="embedded architectures (configs as published; weights random unless --weights, except the "
              "trained digits fixture)")
    short = {"CLIPTextModel": "CLIP", "CLIPTextModelWithProjection": "CLIP", "T5EncoderModel": "T5",
             "Gemma2Model": "Gemma2", "Qwen3Model": "Qwen3",
             "Mistral3ForConditionalGeneration": "Mistral3", "UNet2DConditionModel": "UNet",
             "Qwen2_5_VLForConditionalGeneration": "Qwen2.5-VL", "LlamaForCausalLM": "Llama",
             "HiDreamImageTransformer2DModel": "HiDreamTransformer2D", "UMT5EncoderModel": "UMT5"}
    for col in ("name", "family", "native px", "denoiser", "params", "text encoders: params/tokens", "VAE", "total",
                "steps", "CFG"):
        t.add_column(col, justify="left" if col in ("name", "family", "denoiser", "text encoders: params/tokens")
                     else "right")
    for r in rows:
        encoders = " + ".join(f"{short.get(e['class'], e['class'])} {fmt_n(e['params'])}/{e['tokens']}"
                              + ("*" if e["tokenizer"] == "stand-in" else "") for e in r["text_encoders"])
        cls = r["denoiser_class"]
        native = str(r["native_resolution"])
        if r.get("frames"):  # a video model: height x width x frames
            native = f"{r.get('native_height') or native}x{native}x{r['frames']}"
        t.add_row(r["name"], r["family"], native, short.get(cls, cls.removesuffix("Model")),
                  fmt_n(r["params"][r["denoiser"]]), encoders, fmt_n(r["params"]["vae"]),
                  fmt_n(sum(r["params"].values())), str(r["steps"]),
                  f"{r['guidance']:g}" if r["cfg"] else "off (distilled)" if r["cfg_distilled"] else "off")
    t.caption = ("native px: a video model's height x width x frames; tokens: the length every prompt is padded to "
                 "(Qwen-Image: the most it keeps of a prompt's own tokens, unpadded); * a stand-in tokenizer (the "
                 "real vocabulary ships with no registry package; costs depend only on the length, but for "
                 "Z-Image's caption and Qwen-Image, which follow the prompt's token count: docs/counting.md)")
    return t


def params_tables(model: str, comps: dict) -> list[Table]:
    """``diffprobe models --params-by-module``: per component, its top-level modules and its roles."""
    tables = []
    for name, c in comps.items():
        t = Table(title=f"{model} {name}: {fmt_n(c['total'])} parameters", title_justify="left")
        for col in ("top-level module", "params", "share", "role", "params ", "share "):
            t.add_column(col, justify="left" if col.strip() in ("top-level module", "role") else "right")
        mods = sorted(c["by_module"].items(), key=lambda kv: -kv[1])
        roles = list(c["by_role"].items())
        for i in range(max(len(mods), len(roles))):
            row = []
            for items in (mods, roles):
                k, v = items[i] if i < len(items) else ("", None)
                row += [k, "" if v is None else fmt_n(v), "" if v is None else f"{100 * v / (c['total'] or 1):.1f}%"]
            t.add_row(*row)
        tables.append(t)
    return tables


def accel_gemm_lines(r: dict) -> list[str]:
    """``diffprobe accel gemm``: one GEMM's mapping, cycles, utilization and traffic."""
    return [f"GEMM ({r['m']} x {r['k']}) @ ({r['k']} x {r['n']}) on a {r['rows']}x{r['cols']} array, "
            f"{r['dataflow']} dataflow ({r['base_preset']}'s clock, buffers and energies)",
            f"  mapped {r['mapped_rows']} x {r['mapped_cols']} onto the array, {r['streamed']} streamed; "
            f"{plural(r['folds'], 'fold')} x {plural(r['cycles_per_fold'], 'cycle')}",
            f"  compute {r['compute_cycles']:.0f} cycles, memory {r['memory_cycles']:.0f} cycles -> {r['cycles']:.0f} "
            f"cycles ({fmt_s(r['latency_s'])}); utilization {100 * r['utilization']:.1f}%",
            f"  {fmt_n(r['macs'])} MACs; SRAM {fmt_bytes(r['sram_bytes'])}, DRAM {fmt_bytes(r['dram_bytes'])}; "
            f"energy {r['energy_j'] * 1e6:.3g} µJ"]
