"""FLUX.2: double-stream then single-stream blocks (the single ones with fused q/k/v/MLP projections), modulation
computed once per step for all blocks, joint attention with the text keys first, RoPE over four axes, guidance
distilled into the model; a Mistral-Small-3.1 vision-language encoder whose hidden states of three layers, stacked,
are the caption; latents with their 2x2 patches as channels (the pipeline packs them into tokens)."""

from __future__ import annotations

from diffprobe.models.families import Family


def _unpack_latents_with_ids(size: dict):
    """``Flux2Pipeline._unpack_latents_with_ids`` for meta tensors: the same ops (the positions' largest row and
    column, the flat index, a scatter into a zero grid), with the grid's sides from the size the latents were made
    at (on meta, a maximum cannot say how large it is)."""
    import torch

    def unpack(x, x_ids):
        out = []
        for data, pos in zip(x, x_ids, strict=True):
            ch = data.shape[1]
            h_ids, w_ids = pos[:, 1].to(torch.int64), pos[:, 2].to(torch.int64)
            h_t, w_t = torch.max(h_ids) + 1, torch.max(w_ids) + 1
            flat_ids = h_ids * w_t + w_ids
            h, w = size["h"], size["w"]
            _ = h_t * w_t  # the grid's size, as the pipeline computes it
            grid = torch.zeros((h * w, ch), device=data.device, dtype=data.dtype)
            grid.scatter_(0, flat_ids.unsqueeze(1).expand(-1, ch), data)
            out.append(grid.view(h, w, ch).permute(2, 0, 1))
        return torch.stack(out, dim=0)

    return unpack


class Flux2Family(Family):
    def meta_adapter(self, pipe):
        """The latents' grid size kept from ``prepare_latents`` for :func:`_unpack_latents_with_ids`."""
        from diffprobe.patching import Patches

        patches, size = Patches(), {}
        prepare = pipe.prepare_latents

        def prepare_latents(*args, **kwargs):  # the pipeline passes the size by keyword
            side = pipe.vae_scale_factor * 2  # VAE downsampling, then 2x2 patches as channels
            size["h"], size["w"] = int(kwargs["height"]) // side, int(kwargs["width"]) // side
            return prepare(*args, **kwargs)

        patches.set(pipe, "prepare_latents", prepare_latents)
        patches.set(pipe, "_unpack_latents_with_ids", _unpack_latents_with_ids(size))
        return patches.restore


FAMILY = Flux2Family(
    name="flux2",
    title="FLUX.2 (MMDiT, Mistral-3 encoder)",
    pipelines=("Flux2Pipeline",),
    denoiser_kind="transformer",
    tiny="tiny-flux2",
    latent_patch=2,
    cfg_distilled=True,
    text_keys="start",
    two_streams=True,
    pos_embed_embeds_patches=False,  # Flux2PosEmbed makes the RoPE tables
    joint_paths=(".single_transformer_blocks.",),
    modules={  # the transformer's classes, and its Mistral-3 encoder's (language model and Pixtral vision tower)
        "attention": ("Flux2Attention", "Flux2ParallelSelfAttention", "MistralAttention", "PixtralAttention"),
        "ffn": ("Flux2FeedForward", "MistralMLP", "PixtralMLP"), "act": ("Flux2SwiGLU",),
        "modulation": ("Flux2Modulation",), "embed": ("Flux2TimestepGuidanceEmbeddings",),
        "conditioning": ("Flux2TimestepGuidanceEmbeddings", "Flux2Modulation"),
        "rope": ("Flux2PosEmbed", "MistralRotaryEmbedding", "PixtralVisionRotaryEmbedding"),
        "norm": ("MistralRMSNorm", "PixtralRMSNorm", "Mistral3RMSNorm"),
        "rope_function": (("transformers.models.mistral.", "apply_rotary_pos_emb"),),
    },
)
