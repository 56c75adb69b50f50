"""Stable Diffusion 1.x / 2.x: a UNet with self- and cross-attention (sd15, sd21, sd21-base, tiny, digits)."""

from diffprobe.models.families import Family
from diffprobe.models.schedulers import NOISE_PREDICTION

FAMILY = Family(
    name="sd",
    title="Stable Diffusion 1.x/2.x (UNet)",
    pipelines=("StableDiffusionPipeline",),
    schedulers=NOISE_PREDICTION,
    denoiser_kind="unet",
    tiny="tiny",
    package_loops={"tgate": {"StableDiffusionPipeline": "tgate.SD"}},
)
