"""Stable Diffusion XL: a larger UNet with two text encoders and micro-conditioning embeddings (sdxl)."""

from diffprobe.models.families import Family

FAMILY = Family(
    name="sdxl",
    title="Stable Diffusion XL (UNet)",
    pipelines=("StableDiffusionXLPipeline",),
    denoiser_kind="unet",
    tiny="tiny",  # no tiny SDXL: the SD UNet's tiny variant exercises the same code
)
