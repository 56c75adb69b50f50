"""CLIP score of generated images against their prompts, with CLIP weights the user has locally (never downloaded).

score = 100 × max(0, cos(image embedding, text embedding)), averaged over the images — the usual definition
(e.g. torchmetrics' CLIPScore). Images are resized (bicubic) to the vision tower's size and normalized with
CLIP's mean and standard deviation; prompts use the folder's tokenizer, or diffprobe's offline CLIP tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from diffprobe.errors import DiffprobeError
from diffprobe.models.tokenizer import load_clip_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(out) -> torch.Tensor:
    """transformers returns the projected features as a tensor, or (5.x) as ``pooler_output`` of an output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise DiffprobeError(f"--clip-weights {path} is not a CLIP model folder (no config.json)")
        from transformers import CLIPModel, CLIPTokenizer

        try:
            self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).eval()
        except Exception as exc:  # a foreign or damaged folder: one line naming it
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DiffprobeError(f"could not load CLIP weights from {path}: {msg[:200]}") from exc
        if (path / "vocab.json").is_file() or (path / "tokenizer.json").is_file():
            self.tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
        else:
            self.tokenizer = load_clip_tokenizer()

    def score(self, images: torch.Tensor, prompts: list[str]) -> float:
        """Mean CLIP score of images (N, 3, H, W) in [0, 1] against their prompts."""
        return float(self.scores(images, prompts).mean())

    @torch.inference_mode()
    def scores(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The CLIP score of each image (N, 3, H, W) in [0, 1] against its prompt."""
        size = self.model.config.vision_config.image_size
        x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        ids = self.tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt",
                             max_length=self.model.config.text_config.max_position_embeddings).input_ids
        img = _features(self.model.get_image_features(pixel_values=(x - mean) / std))
        txt = _features(self.model.get_text_features(input_ids=ids))
        return (100 * F.cosine_similarity(img, txt)).clamp(min=0)
