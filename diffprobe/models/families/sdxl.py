"""Stable Diffusion XL: a larger UNet with two text encoders and micro-conditioning embeddings (sdxl)."""

from diffprobe.models.families import Family
from diffprobe.models.schedulers import NOISE_PREDICTION

FAMILY = Family(
    name="sdxl",
    title="Stable Diffusion XL (UNet)",
    pipelines=("StableDiffusionXLPipeline",),
    schedulers=NOISE_PREDICTION,
    denoiser_kind="unet",
    tiny="tiny",  # no tiny SDXL: the SD UNet's tiny variant exercises the same code
    package_loops={"tgate": {"StableDiffusionXLPipeline": "tgate.SDXL"}},
)
