"""The ``digits`` fixture: a small text-to-image model trained offline on scikit-learn's bundled handwritten digits.

Random weights give near-uniform attention, so attention sparsity measured on them means nothing. This model has
SD's block types (cross-attention down/up blocks, transformer blocks with self- and cross-attention over CLIP
tokens, a KL autoencoder) at toy size, and is trained by ``scripts/train_digits.py`` on the 1,797 8×8 digits of
``sklearn.datasets.load_digits`` upsampled to 32×32, with prompts such as "a handwritten seven". Its quality
metric is a scikit-learn classifier trained on the same data: the share of generated images classified as the
digit their prompt asked for.

The weights are committed as one safetensors file (``configs/digits/digits.safetensors``). The CLIP token
embedding (49,408 rows) is stored as the rows the digit prompts use plus their ids; every other row is zero.
"""

from __future__ import annotations

from importlib import resources

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a handwritten {word}", "the digit {digit}", "a picture of the number {word}", "{word}")
SIDE = 32
TOKEN_SUFFIX = "token_embedding.weight"  # the CLIP token table's state-dict key ends so (its prefix varies by version)


def prompt(digit: int, template: int = 0) -> str:
    return TEMPLATES[template].format(word=WORDS[digit], digit=digit)


def label_of(text: str) -> int | None:
    """The digit a prompt asks for, when it is one of :data:`TEMPLATES`' (None otherwise)."""
    for digit in range(10):
        if any(text == t.format(word=WORDS[digit], digit=digit) for t in TEMPLATES):
            return digit
    return None


def images(side: int = SIDE):
    """The bundled digits as a float tensor (N, 3, side, side) in [-1, 1] and their labels (N,)."""
    import torch
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 2 - 1).repeat(1, 3, 1, 1)
    return x, torch.tensor(data.target, dtype=torch.long)


class DigitClassifier:
    """A scikit-learn SVM on the bundled 8×8 digits; scores generated images after downsampling them to 8×8."""

    def __init__(self):
        from sklearn.datasets import load_digits
        from sklearn.svm import SVC

        data = load_digits()
        self.model = SVC(gamma=0.001, C=10.0).fit(data.data, data.target)

    def predict(self, pixels):
        """Digits for images given as a float tensor/array (N, C, H, W) in [0, 1]."""
        import numpy as np
        import torch

        x = torch.as_tensor(np.asarray(pixels), dtype=torch.float32)
        gray = x.mean(dim=1, keepdim=True)
        small = torch.nn.functional.adaptive_avg_pool2d(gray, (8, 8)) * 16.0  # the sklearn digits' 0..16 scale
        return self.model.predict(small.reshape(len(x), 64).numpy())

    def accuracy(self, pixels, digits) -> float:
        import numpy as np

        return float(np.mean(self.predict(pixels) == np.asarray(digits)))


def pack_state(components: dict) -> dict:
    """The tensors to save: every component's state dict under ``<component>.``, the token embedding sparse."""
    import torch

    out = {}
    for name, module in components.items():
        for key, value in module.state_dict().items():
            out[f"{name}.{key}"] = value.detach().contiguous()
    key = next(k for k in out if k.startswith("text_encoder.") and k.endswith(TOKEN_SUFFIX))
    table = out.pop(key)
    rows = torch.nonzero(table.abs().sum(dim=1)).flatten()
    out["text_encoder.token_rows"] = rows.to(torch.int64)
    out["text_encoder.token_values"] = table[rows].contiguous()
    return out


def unpack_into(components: dict, tensors: dict) -> None:
    """Load :func:`pack_state` tensors into freshly built components (strict: every key must match)."""
    import torch

    tensors = dict(tensors)
    rows, values = tensors.pop("text_encoder.token_rows"), tensors.pop("text_encoder.token_values")
    te = components["text_encoder"]
    key = next(k for k in te.state_dict() if k.endswith(TOKEN_SUFFIX))
    full = torch.zeros_like(te.get_input_embeddings().weight)
    full[rows] = values
    tensors[f"text_encoder.{key}"] = full
    for name, module in components.items():
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)


def weights_path():
    return resources.files("diffprobe.models").joinpath("configs", "digits", "digits.safetensors")
