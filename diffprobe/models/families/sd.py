"""Stable Diffusion 1.x / 2.x: a UNet with self- and cross-attention (sd15, sd21, sd21-base, tiny, digits)."""

from diffprobe.models.families import Family

FAMILY = Family(
    name="sd",
    title="Stable Diffusion 1.x/2.x (UNet)",
    pipelines=("StableDiffusionPipeline",),
    denoiser_kind="unet",
    tiny="tiny",
)
