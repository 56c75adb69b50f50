"""Qwen-Image: a double-stream MMDiT (every block keeps an image and a text stream, joint attention with the text
keys first, RoPE over frame/height/width with the text's positions after the image's), 2x2 packed latents, a 3D
causal VAE decoding one frame. The caption is a Qwen2.5-VL language model's last hidden states of the prompt's own
tokens (a system and user turn rendered by a fixed template, whose first 34 tokens are dropped, unpadded). Guidance
is "true CFG": at ``true_cfg_scale`` above 1 with a negative prompt, the transformer runs twice per step, once per
branch (two calls, not one batch of two), and the two predictions are mixed and renormalized.

diffprobe's convention: the transformer's RoPE tables, which diffusers caches per image size after the first call,
are made at every call (as FLUX.1's are), so that every step of a measured run and every replayed step of an analytic
run hold the same ops; they are copies and slices (no FLOPs)."""

from __future__ import annotations

import types

from diffprobe.models.families import Family

NEGATIVE_PROMPT = " "  # the model card's: "using an empty string if you do not have specific concept to remove"


def _meta_prompt_embeds(pipe):
    """``QwenImagePipeline._get_qwen_prompt_embeds`` for the meta device: the same tokenizer call, text-encoder call
    and selection of the prompt's own tokens, with the padding mask kept on the CPU for the selection and the
    caption mask made there (on meta, a boolean mask cannot say how many tokens it keeps, nor whether a mask is all
    ones, which the pipeline tests to drop it). Where the padding mask is all ones (one prompt, or prompts of one
    length: the pipeline pads to the longest), the text encoder gets none: the decision transformers takes in a
    measured run after testing the mask (the test itself, a sum and a compare, is all a measured run has more)."""
    import torch

    def get(prompt=None, device=None, dtype=None):
        device = device or pipe._execution_device
        dtype = dtype or pipe.text_encoder.dtype
        prompts = [prompt] if isinstance(prompt, str) else prompt
        drop = pipe.prompt_template_encode_start_idx
        tokens = pipe.tokenizer([pipe.prompt_template_encode.format(p) for p in prompts],
                                max_length=pipe.tokenizer_max_length + drop, padding=True, truncation=True,
                                return_tensors="pt")
        mask = tokens.attention_mask  # all ones (one prompt, or prompts as long): the encoder builds no padding mask
        hidden = pipe.text_encoder(input_ids=tokens.input_ids.to(device),
                                   attention_mask=None if mask.all() else mask.to(device),
                                   output_hidden_states=True).hidden_states[-1]
        split = [e[drop:] for e in pipe._extract_masked_hidden(hidden, mask)]
        masks = [torch.ones(e.size(0), dtype=torch.long) for e in split]
        longest = max(e.size(0) for e in split)
        embeds = torch.stack([torch.cat([u, u.new_zeros(longest - u.size(0), u.size(1))]) for u in split])
        mask = torch.stack([torch.cat([u, u.new_zeros(longest - u.size(0))]) for u in masks])
        return embeds.to(dtype=dtype, device=device), mask

    return get


class QwenImageFamily(Family):
    def guidance_kwargs(self, guidance: float) -> dict:
        """``true_cfg_scale`` and, where it guides (above 1), the model card's negative prompt; the pipeline's
        ``guidance_scale`` is for guidance-distilled checkpoints (Qwen-Image is not one) and stays unset."""
        return {"true_cfg_scale": guidance, "negative_prompt": NEGATIVE_PROMPT if self.uses_cfg(guidance) else None}

    def patch_size(self, config: dict) -> int:
        """1: the config's ``patch_size`` (2) is the 2x2 packing the pipeline does (:attr:`latent_patch`); the
        transformer's ``img_in`` is a linear layer over the packed tokens."""
        return 1

    def meta_adapter(self, pipe):
        """The prompt encoding for meta tensors (:func:`_meta_prompt_embeds`)."""
        from diffprobe.patching import patch_attr

        return patch_attr(pipe, "_get_qwen_prompt_embeds", _meta_prompt_embeds(pipe))

    def prepare(self, pipe) -> None:
        """The RoPE tables made at every call (see the module's docstring): the positional embedder's cached
        methods replaced, on this instance, by the functions they cache."""
        rope = pipe.transformer.pos_embed
        for name in ("_compute_video_freqs", "_get_device_freqs"):
            fn = getattr(type(rope), name)
            setattr(rope, name, types.MethodType(getattr(fn, "__wrapped__", fn), rope))


FAMILY = QwenImageFamily(
    name="qwenimage",
    title="Qwen-Image (double-stream MMDiT, Qwen2.5-VL encoder)",
    pipelines=("QwenImagePipeline",),
    denoiser_kind="transformer",
    tiny="tiny-qwen-image",
    packs_latents=True,
    latent_patch=2,
    cfg_calls=True,
    text_keys="start",
    pos_embed_embeds_patches=False,  # QwenEmbedRope makes the RoPE tables
    level_names={"img_in": "in"},  # the image tokens' projection embeds the patches (the caption's txt_in: embed)
    path_roles={"img_mod": "modulation", "txt_mod": "modulation"},  # nn.Sequential(SiLU, Linear) per stream
    modules={  # the transformer's own classes, and its Qwen2.5-VL encoder's (language model and vision tower)
        "embed": ("QwenTimestepProjEmbeddings",),
        "conditioning": ("QwenTimestepProjEmbeddings",),
        "rope": ("QwenEmbedRope", "Qwen2_5_VLRotaryEmbedding", "Qwen2_5_VLVisionRotaryEmbedding"),
        "attention": ("Qwen2_5_VLAttention", "Qwen2_5_VLVisionAttention"),
        "ffn": ("Qwen2MLP", "Qwen2_5_VLMLP"), "norm": ("Qwen2_5_VLRMSNorm",),
        "rope_function": (("diffusers.", "apply_rotary_emb_qwen"),
                          ("transformers.models.qwen2_5_vl.", "apply_rotary_pos_emb"),
                          ("transformers.models.qwen2_5_vl.", "apply_rotary_pos_emb_vision")),
    },
)
