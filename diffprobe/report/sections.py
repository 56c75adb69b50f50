"""One list of sections per document kind, shared by the terminal and the HTML renderer.

A section is a function from a document (and its run folder, for figures and images) to a :class:`Section`: a
title, a table (headers and rows of display strings), notes (sentences below the table) and figures. The terminal
(:func:`diffprobe.report.text.terminal_items`) and ``report.html`` (:mod:`diffprobe.report.html`) iterate the same
sections, so what a table is headed, which columns it has and what it says about them cannot diverge between them.
A section that needs a page (images, the environment) is marked ``page_only``; the terminal leaves it out. A new
report section is one function added to its kind's list (:data:`SECTIONS`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Figure:
    """A figure of a section: ``make()`` returns a matplotlib figure (or None: nothing to draw), written as
    ``figures/<name>.png`` (and ``.svg`` with ``svg``)."""

    name: str
    caption: str
    make: Callable[[], object]
    svg: bool = False


@dataclass
class Image:
    """An image file of the run folder, shown on the page."""

    path: Path
    caption: str
    width: int | None = None


@dataclass
class Section:
    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    total: bool = False  # the last row is a total (bold in the terminal)
    left: int = 1  # leading columns that are labels (left-aligned)
    page_only: bool = False  # shown in report.html only (images, the environment, a run's configuration)
    banners: list[str] = field(default_factory=list)  # warnings shown above the table (on the page, highlighted)
    fail: bool = False  # the banners report a failure (red on the page)
    terminal_banners: bool = False  # the terminal prints the banners too (else the command warns on stderr)


SectionFn = Callable[[dict, Path], "Section | list[Section] | None"]


def build(fns: list[SectionFn], doc: dict, folder: Path) -> list[Section]:
    """The sections of ``doc`` (the document read from ``folder``), in order, those with nothing to show left out."""
    out: list[Section] = []
    for fn in fns:
        got = fn(doc, folder)
        for s in got if isinstance(got, list) else [got]:
            if s is not None and (s.rows or s.notes or s.figures or s.images or s.banners):
                out.append(s)
    return out
