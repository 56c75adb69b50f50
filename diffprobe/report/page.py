"""The HTML page every report is built on: escaped tables, banners, findings, inlined figures and images."""

from __future__ import annotations

import base64
import datetime
import html
from pathlib import Path

from diffprobe.records.runfolder import atomic_write
from diffprobe.report import figures as figs

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
.banner { background: #fff4ce; border: 1px solid #e0c25a; padding: 0.6em 1em; border-radius: 4px; margin: 1em 0; }
.banner.fail { background: #fde2e1; border-color: #d9534f; }
ul.findings li { margin: 0.3em 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child, td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.85em; }
img { max-width: 100%; height: auto; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def table(headers: list[str], rows: list[list], left: int = 1) -> str:
    """A table; its first ``left`` columns are labels (left-aligned), the rest numbers (right-aligned)."""
    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Page:
    """Collects the sections of one report and the figure files written beside it."""

    def __init__(self, folder: Path, title: str, subtitle: str):
        self.folder, self.title, self.subtitle = folder, title, subtitle
        self.parts: list[str] = []
        self.fig_dir = folder / "figures"

    def add(self, text: str) -> None:
        self.parts.append(text)

    def h2(self, text: str) -> None:
        self.add(f"<h2>{esc(text)}</h2>")

    def banner(self, text: str, fail: bool = False) -> None:
        self.add(f'<div class="banner{" fail" if fail else ""}">{esc(text)}</div>')

    def findings(self, sentences: list[str]) -> None:
        if sentences:
            self.h2("Findings")
            self.add('<ul class="findings">' + "".join(f"<li>{esc(s)}</li>" for s in sentences) + "</ul>")

    def figure(self, fig, name: str, caption: str, svg: bool = False) -> None:
        if fig is None:
            return
        self.fig_dir.mkdir(exist_ok=True)
        png = figs.png_bytes(fig)
        atomic_write(self.fig_dir / f"{name}.png", lambda tmp: Path(tmp).write_bytes(png))
        if svg:
            text = figs.svg_text(fig)
            atomic_write(self.fig_dir / f"{name}.svg", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        self.image(png, caption)

    def image(self, png: bytes, caption: str, width: int | None = None) -> None:
        data = base64.b64encode(png).decode("ascii")
        w = f' width="{width}"' if width else ""
        kind = "gif" if png[:4] == b"GIF8" else "png"  # a video's frames: an animated GIF
        self.add(f'<figure><img src="data:image/{kind};base64,{data}" alt="{esc(caption)}"{w}>'
                 f"<figcaption>{esc(caption)}</figcaption></figure>")

    def write(self) -> Path:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
               f'<meta name="viewport" content="width=device-width, initial-scale=1">'
               f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body>"
               f"<h1>{esc(self.title)}</h1><p class=\"sub\">{esc(self.subtitle)}</p>"
               + "".join(self.parts)
               + f'<p class="sub">report built {esc(stamp)} by diffprobe from the files in this folder.</p>'
               "</body></html>\n")
        return atomic_write(self.folder / "report.html", lambda tmp: Path(tmp).write_text(doc, encoding="utf-8"))
