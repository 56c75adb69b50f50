"""Z-Image: a single-stream diffusion transformer. Image tokens pass a noise refiner and caption tokens a context
refiner (each a few self-attention blocks, the caption's without timestep modulation); then one sequence of image and
caption tokens (image first, text keys at the end) runs the main layers. A Qwen3 encoder gives the caption: its
second-to-last hidden states of the prompt's own tokens (Qwen3's chat template, no padding). Classifier-free
guidance runs at any scale above 0 (Z-Image-Turbo: 0, none); latents are made in fp32."""

from __future__ import annotations

from diffprobe.models.families import Family
from diffprobe.models.families.levels import named_block_level

_BLOCKS = {"layers": "block.", "noise_refiner": "refine.", "context_refiner": "caption."}


def _meta_encode_prompt(pipe):
    """``ZImagePipeline._encode_prompt`` for the meta device: the same tokenizer call, text-encoder call and
    selection of the prompt's own tokens, with the padding mask kept on the CPU for that selection (on meta, a
    boolean mask cannot say how many tokens it keeps). The text encoder still gets the mask on meta, as in a measured
    run; measured and analytic records are compared in tests/models/test_zimage.py."""

    def encode(prompt, device=None, prompt_embeds=None, max_sequence_length=512):
        if prompt_embeds is not None:
            return prompt_embeds
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [pipe.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                      add_generation_prompt=True, enable_thinking=True)
                   for p in prompts]
        inputs = pipe.tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                                return_tensors="pt")
        device = device or pipe._execution_device
        keep = inputs.attention_mask.bool()
        hidden = pipe.text_encoder(input_ids=inputs.input_ids.to(device), attention_mask=keep.to(device),
                                   output_hidden_states=True).hidden_states[-2]
        return [hidden[i][keep[i]] for i in range(len(hidden))]

    return encode


class ZImageFamily(Family):
    def patch_size(self, config: dict) -> int:
        return int((config.get("all_patch_size") or [1])[0])

    def meta_adapter(self, pipe):
        """The prompt encoding for meta tensors (:func:`_meta_encode_prompt`)."""
        from diffprobe.patching import patch_attr

        return patch_attr(pipe, "_encode_prompt", _meta_encode_prompt(pipe))

    def prepare(self, pipe) -> None:
        """The transformer's RoPE tables, made once (on the CPU) when the pipeline is built: the model makes them
        at its first call and keeps them, so a traced step never pays for them (and analytic mode, which replays
        the first step, does not count them twice)."""
        rope = pipe.transformer.rope_embedder
        if rope.freqs_cis is None:
            rope.freqs_cis = rope.precompute_freqs_cis(rope.axes_dims, rope.axes_lens, theta=rope.theta)

    def text_tokens(self, args: tuple, kwargs: dict) -> int:
        """The main layers' text keys: each caption padded to a multiple of 32 (the model's ``SEQ_MULTI_OF``) after
        the image's padded tokens. Captions of one padded length share one slice; where they differ the model
        masks the batch, and the attention methods leave masked calls dense."""
        caps = kwargs.get("cap_feats", args[2] if len(args) > 2 else None) or []
        return max((len(c) + (-len(c)) % 32 for c in caps), default=0)

    def level(self, path: str) -> str:
        """``top``; ``in`` (the patch embedder ``all_x_embedder``); ``embed`` (timestep, caption embedders);
        ``refine.i`` (noise refiner: image tokens), ``caption.i`` (context refiner: caption tokens), ``block.i``
        (the main layers over both), ``out`` (``all_final_layer``); the VAE decoder's levels."""
        return named_block_level(path, _BLOCKS, {"all_x_embedder": "in", "all_final_layer": "out"})


FAMILY = ZImageFamily(
    name="zimage",
    title="Z-Image (single-stream DiT, Qwen3 encoder)",
    pipelines=("ZImagePipeline",),
    denoiser_kind="transformer",
    tiny="tiny-z-image",
    latent_dtype="float32",
    cfg_above=0.0,
    text_keys="end",
    joint_paths=(".layers.",),
    image_levels=("top", "in", "out", "block.", "refine."),
    path_roles={"adaLN_modulation": "modulation"},  # nn.Sequential holders of the blocks' and final layer's adaLN
    modules={  # the transformer's own classes, and its Qwen3 text encoder's
        "embed": ("TimestepEmbedder",),
        "conditioning": ("TimestepEmbedder",),
        "attention": ("Qwen3Attention",), "ffn": ("Qwen3MLP",), "norm": ("Qwen3RMSNorm",),
        "rope": ("Qwen3RotaryEmbedding",),
        "rope_function": (("transformers.models.qwen3.", "apply_rotary_pos_emb"),),
    },
)

