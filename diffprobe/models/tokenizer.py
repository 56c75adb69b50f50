"""The real CLIP BPE tokenizer, offline.

The CLIP vocabulary (``bpe_simple_vocab_16e6.txt.gz``, MIT, from OpenAI CLIP as shipped in the
``open_clip_torch`` wheel) is package data. From it we derive the ``vocab.json``/``merges.txt`` pair that
``transformers.CLIPTokenizer`` reads, exactly as CLIP builds its encoder table, so no hub and no
``import open_clip`` (which drags in torchvision) is needed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges: 256 byte tokens (x2 with '</w>') + merges + 2 specials = 49408.
_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable-unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    raw = resources.files("diffprobe.models").joinpath(_VOCAB_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]
    tokens = list(_bytes_to_unicode().values())
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def cache_dir() -> Path:
    """Where derived files live (``$DIFFPROBE_CACHE`` or ``~/.cache/diffprobe``)."""
    return Path(os.environ.get("DIFFPROBE_CACHE", Path.home() / ".cache" / "diffprobe"))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)  # atomic: concurrent runs never see half a file


@lru_cache(maxsize=16)
def _tokenizer_folder(settings_json: str) -> Path:
    raw = resources.files("diffprobe.models").joinpath(_VOCAB_FILE).read_bytes()
    key = hashlib.sha256(raw + settings_json.encode()).hexdigest()[:12]
    folder = cache_dir() / f"clip-tokenizer-{key}"
    names = ("vocab.json", "merges.txt", "tokenizer_config.json")
    if all((folder / n).exists() for n in names):
        return folder
    vocab, merges = _vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_atomic(folder / "vocab.json", json.dumps(vocab))
    _write_atomic(folder / "tokenizer_config.json", settings_json)
    return folder


def load_clip_tokenizer(settings: dict | None = None):
    """A ``transformers.CLIPTokenizer`` with the real CLIP vocabulary.

    ``settings`` is a diffusers ``tokenizer_config.json`` (pad token, max length, ...). The files are written
    once to the cache folder and read through ``from_pretrained``, which every transformers version supports.
    """
    from transformers import CLIPTokenizer

    settings = dict(settings or {"model_max_length": 77})
    settings["tokenizer_class"] = "CLIPTokenizer"
    folder = _tokenizer_folder(json.dumps(settings, sort_keys=True))
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
