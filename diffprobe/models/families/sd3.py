"""Stable Diffusion 3 / 3.5: MMDiT with joint attention over text and image tokens (text keys after the image's)."""

from diffprobe.models.families import Family

FAMILY = Family(
    name="sd3",
    title="Stable Diffusion 3/3.5 (MMDiT)",
    pipelines=("StableDiffusion3Pipeline",),
    denoiser_kind="transformer",
    tiny="tiny-sd3",
    text_keys="end",
    modules={"embed": ("CombinedTimestepTextProjEmbeddings",),
             "conditioning": ("CombinedTimestepTextProjEmbeddings",)},
)
