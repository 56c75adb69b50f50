"""Stable Diffusion 3 / 3.5: MMDiT with joint attention over text and image tokens (text keys after the image's);
SD3.5-medium's MMDiT-X adds an image-only self-attention to its first blocks."""

from diffprobe.models.families import Family

FAMILY = Family(
    name="sd3",
    title="Stable Diffusion 3/3.5 (MMDiT)",
    pipelines=("StableDiffusion3Pipeline",),
    denoiser_kind="transformer",
    tiny="tiny-sd3",
    text_keys="end",
    modules={"embed": ("CombinedTimestepTextProjEmbeddings",),
             "conditioning": ("CombinedTimestepTextProjEmbeddings",),
             "modulation": ("SD35AdaLayerNormZeroX",)},  # SD3.5's MMDiT-X: 9D adaLN for the dual attention
)
