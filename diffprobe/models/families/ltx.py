"""LTX-Video: a video DiT over 1x1x1 patches of a latent that its VAE compresses 32x32 in space and 8x in time (128
channels), each block self-attention with 3D RoPE, cross-attention to the T5 caption (its padding masked) and a
GELU feed-forward, adaLN-single modulation; CFG runs both branches in one batch of two. The VAE decodes the whole
clip at once (no temporal caches)."""

from __future__ import annotations

from diffprobe.models.families import Family


class LTXFamily(Family):
    def pack_latents(self, pipe, latents, shape: tuple[int, ...]):
        """The starting noise packed into tokens, as ``LTXPipeline.prepare_latents`` packs its own."""
        config = pipe.transformer.config
        return type(pipe)._pack_latents(latents, config.patch_size, config.patch_size_t)


FAMILY = LTXFamily(
    name="ltx",
    title="LTX-Video (video DiT, T5-XXL encoder, 32x32x8 VAE)",
    pipelines=("LTXPipeline",),
    denoiser_kind="transformer",
    tiny="tiny-ltx",
    latent_dtype="float32",  # LTXPipeline.prepare_latents makes them in float32
    temporal_compression=8,
    vae_downsample=32,
    count_kwarg="num_videos_per_prompt",
    pos_embed_embeds_patches=False,
    cross_paths=(".attn2",),
    level_names={"proj_in": "in"},  # the token projection embeds the (1x1x1) patches
    min_steps=2,
    min_steps_why="its scheduler stretches the schedule to a terminal value, which one step cannot: the timestep "
                  "comes out NaN",
    modules={"rope": ("LTXVideoRotaryPosEmbed",), "attention": ("LTXAttention",)},
)
