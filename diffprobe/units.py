"""Number formats shared by the terminal tables, the findings and the HTML report: one formatter per unit."""

from __future__ import annotations


def fmt_n(x: float, unit: str = "") -> str:
    """A count with an SI prefix (k … Z), two decimals: ``6.49 E``; with ``unit``, ``3.28 kB`` and ``0 B`` alike."""
    for prefix, scale in (("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.0f}" + (f" {unit}" if unit else "")


def fmt_s(x: float) -> str:
    """Seconds as µs, ms or s."""
    if x < 1e-3:
        return f"{x * 1e6:.1f} µs"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_k(x: float) -> str:
    """An exponent to two decimals, never "-0.00"."""
    v = round(x, 2)
    return f"{v if v != 0 else 0.0:.2f}"


def fmt_bytes(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB`` … ``2.00 GiB`` (two decimals from GiB up)."""
    if abs(n) < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.2f} {unit}" if unit in ("GiB", "TiB", "PiB") else f"{n:.1f} {unit}"
    return str(n)


def si_scale(largest: float, unit: str) -> tuple[float, str]:
    """The scale and label for an axis whose largest value is ``largest`` ``unit``s: the largest SI prefix that
    keeps that value at 1 or more (``(1e9, "GFLOP")`` for 3e11 FLOPs)."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(largest) >= scale:
            return scale, prefix + unit
    return 1.0, unit


def setting_series(r: dict) -> str:
    """The series an ``approx`` row belongs to in findings and figures: its method (``block``), a composite's
    methods joined (``block+deepcache``: never mixed into ``block``'s line), and reused masks apart
    (``block, mask every 3``)."""
    setting = r.get("setting") or ""
    name = "+".join(p.split("=")[0] for p in setting.split(" ")[0].split("+")) if "+" in setting else r["method"]
    n = r.get("mask_interval") or 1
    return name + (f", mask every {n}" if n > 1 else "")


def setting_name(r: dict) -> str:
    """An ``approx`` row's setting as written (``threshold=0.01``, ``block=0.8+deepcache=2``)."""
    return r.get("setting") or (r["method"] if r["method"] == "dense" else f"{r['method']}={r['value']:g}")


def size_words(d) -> str:
    """``WxH`` as the run's height x width, and a video's frames (``1280x720 x 81 frames (21 latent)``); ``d``: a
    run document or anything with ``height``, ``width`` and optional ``frames`` / ``latent_frames``."""
    size = f"{d.height}x{d.width}"
    frames = getattr(d, "frames", None)
    if frames:
        latent = getattr(d, "latent_frames", None)
        size += f" x {frames} frames" + (f" ({latent} latent)" if latent else "")
    return size
