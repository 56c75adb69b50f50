"""HunyuanVideo: a video DiT of dual-stream blocks (the video and the caption each with their own weights, joint
attention over both, the caption's padding masked) then single-stream blocks (one sequence, parallel attention and
MLP), 3D RoPE over the video tokens, 2x2 spatial patches; the caption is LLaVA-Llama-3's third-to-last hidden states
of a fixed prompt template (cropped to the prompt's part, padded to 256 tokens) refined by two token-refiner blocks,
CLIP-L's pooled output conditions the modulation beside the timestep and the embedded guidance scale (one transformer
call per step: guidance-distilled). A 3D causal VAE decodes 16-frame tiles with overlap (its framewise decoding,
on by default)."""

from __future__ import annotations

from diffprobe.models.families import Family

FAMILY = Family(
    name="hunyuanvideo",
    title="HunyuanVideo (dual- and single-stream video DiT, LLaVA-Llama-3 and CLIP-L encoders, 3D causal VAE)",
    pipelines=("HunyuanVideoPipeline",),
    denoiser_kind="transformer",
    tiny="tiny-hunyuan-video",
    cfg_distilled=True,
    text_keys="end",
    two_streams=True,
    joint_paths=("single_transformer_blocks",),
    pos_embed_embeds_patches=False,
    temporal_compression=4,
    count_kwarg="num_videos_per_prompt",
    latent_dtype="float32",
    modules={
        "rope": ("HunyuanVideoRotaryPosEmbed",),
        "embed": ("HunyuanVideoConditionEmbedding",),
        "conditioning": ("HunyuanVideoConditionEmbedding",),
        "modulation": ("HunyuanVideoAdaNorm", "AdaLayerNormZeroSingle"),
    },
)
