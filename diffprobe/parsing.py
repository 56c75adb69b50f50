"""Comma lists from the command line, parsed and checked: one clear error naming the flag for any bad item."""

from __future__ import annotations

from diffprobe.errors import DiffprobeError


def _items(text: str, flag: str, example: str) -> list[str]:
    """The comma list's items, stripped; an empty list or an empty item (``64,,128``) is refused."""
    items = [t.strip() for t in text.split(",")]
    if not any(items):
        raise DiffprobeError(f"{flag} is empty; give a comma list such as {example}")
    if not all(items):
        raise DiffprobeError(f"{flag} {text!r} has an empty item; give a comma list such as {example}")
    return items


def _unique(values: list, items: list[str], flag: str) -> list:
    """``values`` (parsed from ``items``), refusing one given twice (``64,64``: a point measured twice)."""
    seen: dict = {}
    for v, item in zip(values, items, strict=True):
        if v in seen:
            raise DiffprobeError(f"{flag} lists {seen[v]!r} twice" + ("" if item == seen[v] else f" (as {item!r})")
                                 + "; give each value once")
        seen[v] = item
    return values


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    """``"256,512,768x512"`` -> [(256, 256), (512, 512), (768, 512)] as (height, width); every side a
    multiple of 8."""
    items = _items(text, "--resolutions", "256,512,768")
    out = []
    for item in items:
        parts = item.lower().split("x")
        try:
            sides = [int(p) for p in parts]
        except ValueError:
            sides = []
        if len(sides) not in (1, 2) or any(s <= 0 for s in sides):
            raise DiffprobeError(f"cannot parse resolution {item!r}; use N (square) or HxW, e.g. 512 or 768x512")
        h, w = sides if len(sides) == 2 else (sides[0], sides[0])
        for side in (h, w):
            if side % 8:
                raise DiffprobeError(f"resolution {item} is not a multiple of 8 (the VAE downsamples by 8)")
        out.append((h, w))
    return _unique(out, items, "--resolutions")


def parse_ints(text: str, flag: str) -> list[int]:
    items = _items(text, flag, "1,2,4")
    try:
        values = [int(t) for t in items]
    except ValueError:
        raise DiffprobeError(f"cannot parse {flag} {text!r}; give whole numbers such as 1,2,4") from None
    if any(v < 1 for v in values):
        raise DiffprobeError(f"{flag} values must be at least 1, got {text}")
    return _unique(values, items, flag)


def parse_floats(text: str, flag: str, low: float, high: float, high_open: bool) -> tuple[float, ...]:
    items = _items(text, flag, "1e-3,1e-2")
    try:
        values = tuple(float(t) for t in items)
    except ValueError:
        raise DiffprobeError(f"cannot parse {flag} {text!r}; give numbers such as 1e-3,1e-2") from None
    for v in values:
        ok = low <= v < high if high_open else low < v <= high
        if not ok:
            bounds = f"[{low:g}, {high:g})" if high_open else f"({low:g}, {high:g}]"
            raise DiffprobeError(f"{flag} value {v:g} is outside {bounds}")
    return tuple(_unique(list(values), items, flag))
