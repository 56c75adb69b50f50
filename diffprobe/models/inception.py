"""The Inception-v3 feature extractor of FID, from weights the user supplies (nothing is downloaded).

diffprobe reads the standard detector file ``inception-2015-12-05.pt``: the TensorFlow FID network of Heusel et al.
(2017) ported to TorchScript by NVIDIA for StyleGAN2-ADA and used by clean-fid and StyleGAN3's metrics. A TorchScript
file carries its own definition, so it loads here without torchvision (which the FID libraries, pytorch-fid,
torch-fidelity and clean-fid, all import, and which does not load beside this machine's torch). It is called as
those tools call it: uint8-range images (N, 3, H, W), which it resizes to 299 x 299 itself, and
``return_features=True`` for the 2,048 pool features. pytorch-fid's ``pt_inception-...pth`` is a bare state dict
(its definition lives in torchvision's Inception): convert it to TorchScript where torchvision loads, or use the
StyleGAN file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffprobe.errors import DiffprobeError

FEATURES = 2048


class InceptionFeatures:
    """FID features of images in [0, 1] from the TorchScript detector at ``path``, on ``device``."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path).expanduser()
        if not path.is_file():
            raise DiffprobeError(f"--inception-weights {path} is not a file (the TorchScript detector "
                                 "inception-2015-12-05.pt)")
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:  # noqa: BLE001 - a foreign or damaged file: one line naming it
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DiffprobeError(f"--inception-weights {path} is not a TorchScript Inception detector: "
                                 f"{first[:160]}") from None
        self.device = device
        probe = self.features(torch.zeros(2, 3, 32, 32))
        if probe.shape != (2, FEATURES):
            raise DiffprobeError(f"--inception-weights {path} gives features of shape {tuple(probe.shape[1:])}, "
                                 f"not the {FEATURES} of FID's Inception pool layer")

    @torch.inference_mode()
    def features(self, images: torch.Tensor):
        """(N, 2048) float64 numpy features of images (N, 3, H, W) in [0, 1]."""
        x = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).to(self.device)
        return self.model(x, return_features=True).double().cpu().numpy()
