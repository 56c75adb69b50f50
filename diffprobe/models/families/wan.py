"""Wan 2.1 (text-to-video): a single-stream video DiT over the 3D latent grid (latent frames x height x width, 1x2x2
patches by a 3D convolution), each block self-attention over every token of the clip (3D RoPE), cross-attention to
the UMT5-XXL caption, and a feed-forward, modulated by a shared adaLN table; a 3D causal VAE that decodes one latent
frame at a time through its temporal caches. Guidance runs the transformer twice per step (the prompt, then the
negative prompt: two calls, not one batch of two)."""

from __future__ import annotations

from diffprobe.models.families import Family
from diffprobe.models.families.levels import named_block_level


class WanFamily(Family):
    def level(self, path: str) -> str:
        """``block.i`` over ``blocks``, ``patch_embedding`` as ``in``, ``norm_out`` / ``proj_out`` as ``out``, the
        timestep and caption embedders and the RoPE tables as ``embed``."""
        return named_block_level(path, {"blocks": "block."},
                                 {"patch_embedding": "in", "norm_out": "out", "proj_out": "out"})


FAMILY = WanFamily(
    name="wan",
    title="Wan 2.1 (video DiT, UMT5-XXL encoder, 3D causal VAE)",
    pipelines=("WanPipeline",),
    denoiser_kind="transformer",
    tiny="tiny-wan",
    cfg_calls=True,
    latent_dtype="float32",  # WanPipeline.prepare_latents makes them in float32
    pos_embed_embeds_patches=False,
    temporal_compression=4,
    count_kwarg="num_videos_per_prompt",
    modules={
        "rope": ("WanRotaryPosEmbed",),
        "embed": ("WanTimeTextImageEmbedding",),
        "attention": ("WanAttention", "UMT5Attention", "WanAttentionBlock"),  # the last: the VAE's mid-block
        "ffn": ("UMT5LayerFF", "UMT5DenseGatedActDense"),
        "norm": ("UMT5LayerNorm", "WanRMS_norm", "FP32LayerNorm"),
    },
    path_roles={"scale_shift_table": "modulation"},
)
