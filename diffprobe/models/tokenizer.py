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


# Stand-ins for tokenizers whose vocabulary no registry package ships (T5's and Gemma's SentencePiece models).
# The pipelines pad or truncate every prompt to a fixed ``max_sequence_length``, so the text encoder's cost depends
# only on that length, never on which ids fill it. A stand-in is the CLIP BPE above (a real subword tokenizer with
# similar English token counts), its ids moved above the model's special tokens and cut to the model's vocabulary,
# with the model's own special tokens and template (T5: ``text </s>``; Gemma: ``<bos> text``).
STAND_INS = {
    "T5TokenizerFast": {"specials": ["<pad>", "</s>", "<unk>"], "vocab_size": 32100, "pad": "<pad>",
                        "eos": "</s>", "unk": "<unk>", "bos": None, "template": "$A </s>", "padding_side": "right"},
    # UMT5's SentencePiece (Wan's google/umt5-xxl tokenizer, saved as a slow T5Tokenizer): T5's layout, 256,384 ids
    "T5Tokenizer": {"specials": ["<pad>", "</s>", "<unk>"], "vocab_size": 256384, "pad": "<pad>", "eos": "</s>",
                    "unk": "<unk>", "bos": None, "template": "$A </s>", "padding_side": "right"},
    "GemmaTokenizerFast": {"specials": ["<pad>", "<eos>", "<bos>", "<unk>"], "vocab_size": 256000, "pad": "<pad>",
                           "eos": "<eos>", "unk": "<unk>", "bos": "<bos>", "template": "<bos> $A",
                           "padding_side": "left"},
    # Qwen2/3's byte-level BPE (Z-Image's Qwen3 encoder, Qwen-Image's Qwen2.5-VL): Z-Image wraps the prompt in
    # Qwen3's chat template (one user turn, the assistant's turn opened, thinking left on: no empty think block),
    # Qwen-Image in its own system-and-user template whose first 34 tokens it drops; both keep only the prompt's own
    # tokens, unpadded, so here the cost follows the stand-in's count of them (see QWEN_NOTE). A newline is one
    # token, as in Qwen's vocabulary, so the templates are as long as with the real tokenizer (Qwen-Image's prefix:
    # 34 tokens with both)
    "Qwen2Tokenizer": {"specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "vocab_size": 151936,
                       "pad": "<|endoftext|>", "eos": "<|im_end|>", "unk": "<|endoftext|>", "bos": None,
                       "template": "$A", "padding_side": "right", "words": ["\n"],
                       "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                                        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>"
                                        "assistant\n{% endif %}"},
    # Llama 3's tiktoken BPE (HiDream's tokenizer_4, shipped as a plain PreTrainedTokenizerFast): the pipeline pads to
    # max_sequence_length (its pad token is the eos), so the cost depends on that length alone
    "PreTrainedTokenizerFast": {"specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
                                "vocab_size": 128256, "pad": "<|eot_id|>", "eos": "<|eot_id|>",
                                "unk": "<|end_of_text|>", "bos": "<|begin_of_text|>",
                                "template": "<|begin_of_text|> $A", "padding_side": "right"},
    # Mistral's tekken BPE behind FLUX.2's PixtralProcessor: the pipeline renders a system and a user turn with the
    # chat template and pads to max_sequence_length, so the cost depends on that length alone
    "PixtralProcessor": {"specials": ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]",
                                      "[/SYSTEM_PROMPT]", "<pad>"], "vocab_size": 131072, "pad": "<pad>",
                         "eos": "</s>", "unk": "<unk>", "bos": "<s>", "template": "$A", "padding_side": "left",
                         "chat_template": "<s>{% for m in messages %}{% set text = m['content'] if m['content'] is "
                                          "string else m['content'] | map(attribute='text') | join('') %}"
                                          "{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
                                          "{% elif m['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}"
                                          "</s>{% endif %}{% endfor %}"},
}
QWEN_NOTE = ("stand-in tokenizer (CLIP BPE remapped to Qwen's vocabulary size, special tokens and newline, with "
             "Qwen3's chat template; the real vocabulary ships with no registry package): the pipeline encodes the "
             "prompt's own tokens unpadded, so text-encoder and caption costs follow the stand-in's token count, near "
             "but not equal to the real tokenizer's")
STAND_IN_NOTE = ("stand-in tokenizer (CLIP BPE remapped to the model's vocabulary and special tokens; the real "
                 "vocabulary ships with no registry package): costs depend only on the padded length, the text "
                 "encoder's token ids are not the real model's")


def is_stand_in(settings: dict) -> bool:
    """Whether the tokenizer config ``settings`` needs a stand-in (no shipped vocabulary)."""
    return settings.get("tokenizer_class") in STAND_INS


@lru_cache(maxsize=4)
def _stand_in_json(kind: str) -> str:
    spec = STAND_INS[kind]
    backend = json.loads(load_clip_tokenizer().backend_tokenizer.to_str())
    model = backend["model"]
    words = spec.get("words", [])  # tokens CLIP's pre-tokenizer would drop (Qwen's newline), matched as written
    offset = len(spec["specials"]) + len(words)
    room = spec["vocab_size"] - offset
    clip_vocab = {t: i for t, i in model["vocab"].items() if i < room and not t.startswith("<|")}
    vocab = {t: i for i, t in enumerate([*spec["specials"], *words])}
    vocab.update({t: i + offset for t, i in clip_vocab.items()})
    n_bytes = 512  # CLIP's vocabulary: 256 byte tokens, the same with '</w>', then one token per merge
    model.update(vocab=vocab, merges=model["merges"][:max(0, room - n_bytes)], unk_token=spec["unk"])
    special_ids = {t: vocab[t] for t in spec["specials"]}
    backend["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                                "normalized": False, "special": True} for t, i in special_ids.items()] + [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": False} for t in words]
    single = [{"SpecialToken": {"id": t, "type_id": 0}} if t.startswith("<") else {"Sequence": {"id": "A",
              "type_id": 0}} for t in spec["template"].split()]
    backend["post_processor"] = {"type": "TemplateProcessing", "single": single, "pair": single + [
        {"Sequence": {"id": "B", "type_id": 0}}], "special_tokens": {
        t: {"id": t, "ids": [special_ids[t]], "tokens": [t]} for t in spec["specials"] if t in spec["template"]}}
    backend["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    return json.dumps(backend)


def load_stand_in_tokenizer(settings: dict):
    """The stand-in for a T5 or Gemma tokenizer (``settings``: the pipeline's ``tokenizer_config.json``), a real
    ``transformers`` fast tokenizer: it saves and loads like any other (see :data:`STAND_IN_NOTE`)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    kind = settings["tokenizer_class"]
    spec = STAND_INS[kind]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_stand_in_json(kind)), pad_token=spec["pad"], eos_token=spec["eos"],
        unk_token=spec["unk"], bos_token=spec["bos"], model_max_length=int(min(settings.get(
            "model_max_length", 512), 2**31 - 1)), padding_side=settings.get("padding_side", spec["padding_side"]))
    if spec.get("chat_template"):
        tok.chat_template = spec["chat_template"]
    tok.stand_in = True
    tok.stand_in_note = QWEN_NOTE if kind == "Qwen2Tokenizer" else STAND_IN_NOTE
    return tok


def load_tokenizer(settings: dict):
    """The tokenizer a pipeline's ``tokenizer_config.json`` describes: the real CLIP one, else a stand-in. Built once
    per configuration and process (parsing its vocabulary takes 0.06 s), each caller given its own shallow copy: an
    object of its own to patch (the stage timer wraps each tokenizer of a pipeline, and HiDream's two CLIP tokenizers
    share one configuration) over the one read-only vocabulary."""
    import copy

    return copy.copy(_load_tokenizer(json.dumps(settings, sort_keys=True)))


@lru_cache(maxsize=16)
def _load_tokenizer(settings_json: str):
    settings = json.loads(settings_json)
    if is_stand_in(settings):
        return load_stand_in_tokenizer(settings)
    return load_clip_tokenizer(settings)
