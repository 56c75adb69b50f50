"""Image quality of an approximate run against dense from the same noise: PSNR and SSIM (scikit-image), latent
relative error per step."""

from __future__ import annotations


def quality(dense: dict, approx: dict) -> dict:
    """PSNR and SSIM of the images (mean over the batch) and the latent relative error per step."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim, identical = [], [], 0
    for a, b in zip(dense["images"], approx["images"], strict=True):
        x, y = a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy()
        if np.array_equal(x, y):  # PSNR is infinite: counted apart, so the JSON stays standard
            identical += 1
        else:
            psnr.append(peak_signal_noise_ratio(x, y, data_range=1.0))
        win = min(7, min(x.shape[:2]) // 2 * 2 - 1)
        ssim.append(structural_similarity(x, y, data_range=1.0, channel_axis=2, win_size=win))
    rel = [float((b - a).norm() / a.norm()) for a, b in zip(dense["latents"], approx["latents"], strict=True)]
    return {"psnr": float(np.mean(psnr)) if psnr else None, "identical": identical == len(ssim),
            "identical_images": identical, "ssim": float(np.mean(ssim)), "latent_rel_error": rel}
