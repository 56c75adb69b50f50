"""FLUX.1: double-stream then single-stream blocks, joint attention with the text keys first, RoPE, 2x2 packed
latents, guidance distilled into the model (one pass whatever the scale)."""

from diffprobe.models.families import Family

FAMILY = Family(
    name="flux",
    title="FLUX.1 (MMDiT, packed latents)",
    pipelines=("FluxPipeline",),
    denoiser_kind="transformer",
    tiny="tiny-flux",
    packs_latents=True,
    latent_patch=2,
    cfg_distilled=True,
    text_keys="start",
    two_streams=True,
    joint_paths=(".single_transformer_blocks.",),
    pos_embed_embeds_patches=False,  # FluxPosEmbed makes the RoPE tables
    modules={"attention": ("FluxAttention",), "rope": ("FluxPosEmbed",),
             "embed": ("CombinedTimestepGuidanceTextProjEmbeddings",),
             "conditioning": ("CombinedTimestepGuidanceTextProjEmbeddings",),
             "modulation": ("AdaLayerNormZeroSingle",)},
)
