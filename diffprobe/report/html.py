"""``report.html``: one self-contained page per run folder (figures inlined as data URIs, no script, no
external URL), readable offline. Figures are also written to ``figures/`` as PNG (and SVG for the scaling plots).

The page shows the same sections as the terminal (:mod:`diffprobe.report.sections`), read from the folder's files
alone. Every user-supplied string (prompt, model path, labels) goes through :func:`html.escape`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from diffprobe.errors import DiffprobeError
from diffprobe.records.documents import Document
from diffprobe.records.runfolder import read_result
from diffprobe.records.storage import Store, is_url
from diffprobe.report.compare import compare_report
from diffprobe.report.page import Page, esc, table
from diffprobe.report.sections import Section, build
from diffprobe.report.text import SECTIONS


def build_report(folder: str | Path) -> Path | str:
    """(Re)build ``report.html`` for a profile, sweep, sparsity, approx or compare folder; returns its path. A
    folder at a URL (``s3://...``, :mod:`diffprobe.records.storage`) is read into a temporary folder, reported there,
    and its ``report.html`` and figures written back; the URL of the report is returned."""
    if is_url(folder):
        return _remote_report(str(folder))
    folder = Path(folder)
    kind, data = read_result(folder)
    if kind == "compare":
        return compare_report(folder, data)
    if kind == "sweep":
        from diffprobe.run.sweep import current_findings  # a killed sweep's points on disk: its findings

        data = replace(data, findings=current_findings(folder, data))
    page = Page(folder, *_titles(kind, data))
    for text, fail in _banners(kind, data):
        page.banner(text, fail=fail)
    for section in build(SECTIONS[kind], data, folder):
        render(page, section)
    return page.write()


def _remote_report(location: str) -> str:
    import tempfile

    store = Store(location)
    if not store.is_dir():
        raise DiffprobeError(f"run folder {location} does not exist")
    with tempfile.TemporaryDirectory(prefix="diffprobe-report-") as tmp:
        local = store.download("", Path(tmp))
        path = build_report(local)
        store.write_bytes("report.html", path.read_bytes())
        for fig in sorted((local / "figures").glob("*")):
            store.write_bytes(f"figures/{fig.name}", fig.read_bytes())
    return store.url("report.html")


def render(page: Page, s: Section) -> None:
    """One section on the page: its heading, banners, table, notes (a list, for findings), figures and images."""
    if s.title == "Findings":
        page.findings(s.notes)
        return
    page.h2(s.title)
    for b in s.banners:
        page.banner(b, fail=s.fail)
    if s.rows:
        page.add(table(s.headers, s.rows, s.left))
    page.add("".join(f"<p>{esc(n)}</p>" for n in s.notes))
    for f in s.figures:
        page.figure(f.make(), f.name, f.caption, svg=f.svg)
    for im in s.images:
        page.image(im.path.read_bytes(), im.caption, width=im.width)


def _titles(kind: str, d: Document) -> tuple[str, str]:
    if kind == "profile":
        return (f"diffprobe profile — {d.model_title or d.model}",
                f"{d.height}×{d.width} px" + (f" × {d.frames} frames" if d.frames else "")
                + f", batch {d.batch}, {d.steps} steps, "
                f"{d.mode} on {d.device} ({d.dtype})")
    if kind == "sweep":
        cfg, n = d.config, len((d.findings or {}).get("points") or [])
        return f"diffprobe sweep — {d.model}", f"{n} points, {cfg.get('steps')} steps, {d.mode}, " \
                                                       f"{cfg.get('dtype')}"
    if kind == "sparsity":
        return (f"diffprobe sparsity — {d.model}", f"{len(d.points)} resolution(s), "
                f"{d.steps} steps, prompt {d.prompt!r}")
    if kind == "accel":
        return f"diffprobe accel — {d.model}", f"{d.height}×{d.width} px, {d.steps} steps"
    frames = f" × {d.frames} frames" if d.frames else ""
    return (f"diffprobe approx — {d.model}", f"{d.height}×{d.width} px{frames}, {d.steps} steps, "
            f"{len(d.prompts)} {'video(s)' if d.frames else 'image(s)'}, renormalize={d.renormalize}")


def _banners(kind: str, d: Document) -> list[tuple[str, bool]]:
    """What a reader must know before any number: an analytic or random-weights run, a failed one."""
    out = []
    if kind == "profile" and d.mode == "analytic":
        out.append(("Analytic run: counted on the meta device, with no weights and no compute. FLOPs and bytes are "
                    "exact counts of what the pipeline executes; nothing was timed and no image was drawn.", False))
    elif kind == "profile" and d.random_weights:
        out.append(("Random weights: timings and FLOPs are real; the image content and any attention sparsity are "
                    "not (load real weights with --weights for those).", False))
    if kind == "profile" and d.status != "ok":
        out.append((f"This run failed: {d.error}. What was measured before the failure is shown.", True))
    return out
