"""CogVideoX: a video DiT whose blocks attend jointly over the T5 caption and the video's tokens (the caption first,
one sequence, with an "expert" adaLN per modality: the caption's and the video's own shift, scale and gate), 3D
RoPE over the video tokens, 2x2 spatial patches; a 3D causal VAE that decodes two latent frames at a time through its
convolution caches. CFG runs both branches in one batch of two; the latents are (batch, frames, channels, h, w)."""

from __future__ import annotations

from diffprobe.models.families import Family


class CogVideoXFamily(Family):
    def latent_shape(self, channels: int, scale: int, batch: int, height: int, width: int,
                     frames: int = 1) -> tuple[int, ...]:
        """CogVideoXPipeline's latents: the frame axis before the channels."""
        return batch, self.latent_frames(frames), channels, height // scale, width // scale


FAMILY = CogVideoXFamily(
    name="cogvideox",
    title="CogVideoX (video DiT, joint text-video attention, T5-XXL encoder, 3D causal VAE)",
    pipelines=("CogVideoXPipeline",),
    denoiser_kind="transformer",
    tiny="tiny-cogvideox",
    text_keys="start",
    joint_paths=("transformer.transformer_blocks.",),  # attn1 holds the caption and the video in one sequence
    level_names={"norm_final": "out"},  # the final LayerNorm, before the output adaLN
    temporal_compression=4,
    count_kwarg="num_videos_per_prompt",
    schedulers=(),
    modules={
        "modulation": ("CogVideoXLayerNormZero",),
    },
)
